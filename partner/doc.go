// Package partner links the region's data with a partner authority's
// (Socialstyrelsen, SCB, a quality register) on personnummer without either
// side handing its numbers to the other: blind linkage with a verifiable
// oblivious pseudorandom function (VOPRF, RFC 9497, [Suite]).
//
// # The protocol
//
// Each project has an OPRF key, derived by [DeriveKey] from the project's
// 32-byte oprf_seed in the key store; its public key ([Key.PublicKey]) is
// published to the partner. The pseudonym of a personnummer is the OPRF
// output for its canonical 12 digits under that key, as lowercase hex of the
// first 32 bytes.
//
//	partner (BlindFile)                         service (Key.Evaluate)
//	================================================================
//	for each distinct linkable number x:
//	  r random, B = r·H(x)        -- B… ----->
//	                                            Z = k·B for each B,
//	                              <-- Z…, π --  π proves log_G(pk) = log_B(Z)
//	verify π against pk
//	pseudonym = SHA-512(x, r⁻¹·Z)[:32]
//
// The service computes the same pseudonyms directly for the numbers it holds
// ([Key.Pseudonym], [Key.Pseudonyms]); the two sides' files then join on the
// PSEUDONYM column.
//
// [BlindFile] is the partner's side: it reads a CSV file, normalises every
// identity with package personnummer, blinds each distinct linkable number
// once, has the blinded elements evaluated in batches through an
// [Evaluator] (the service's Evaluate RPC), checks every batch's proof and
// writes the file back with the identity column replaced by PSEUDONYM.
// [Key.Evaluate] is the service's side.
//
// # What each side learns
//
// The service sees only blinded elements: uniformly random group elements,
// independent of the numbers behind them. It learns how many distinct
// linkable numbers the partner evaluated (the batch sizes) and when, nothing
// about which numbers, and not the pseudonyms the partner derives.
//
// The partner learns the pseudonym of each number it submits and nothing
// about the key. Every batch carries a DLEQ proof that the service used the
// key behind the published public key; BlindFile refuses a batch whose proof
// fails, so the service cannot give one partner, one batch or one number a
// key of its own to tell them apart, nor return wrong values unnoticed. The
// partner cannot compute a pseudonym without the service: each number costs
// one evaluation.
//
// What the protocol does not hide: a pseudonym is a keyed function of the
// number, so the key holder (the service) can compute the pseudonym of any
// number it can name, and a pseudonymised file in its hands is linked to the
// numbers it knows — which is what linkage is for. Valid personnummer can be
// enumerated (some tens of millions a century), so the pseudonyms are only
// as secret as the key, and a partner that could evaluate without limit
// could build a dictionary in hours. The service therefore counts and audits
// evaluations per project, and should cap them near the size of the files
// agreed for the project. The protocol keeps the numbers out of the exchange,
// the logs and the other side's inputs; it does not make a pseudonymised file
// anonymous to the key holder.
//
// # Numbers that cannot be linked
//
// Only personnummer and samordningsnummer are linked. Interim and reserve
// numbers, invalid and empty identities keep their row with an empty
// pseudonym and are counted in [BlindReport.Unlinkable], never dropped and
// never guessed.
//
// # No identity numbers in errors
//
// Errors name the file, the line, the column, the batch or the element index;
// never a field value, a blinded element or an identity number.
//
// # Speed
//
// Each element costs the service one constant-time scalar multiplication
// by the key. circl's VerifiableServer spends a second one per element on
// the proof's composite element; [Key.Evaluate] computes that composite
// (whose scalars and elements are public) as one variable-time
// multi-scalar multiplication instead, with RFC 9497's transcript: its
// output is byte for byte circl's and the RFC's test vectors, and partners
// verify it with circl. That doubles the service's throughput. The partner
// verifies with circl's VerifiableClient unchanged (a fault in a verifier
// would fail open), so its round trip costs about four scalar
// multiplications per number, spread over [BlindOptions.Workers].
//
// On this project's machine (2 cores of an AMD EPYC, go1.26.8; the
// standard library's X25519 takes 48 µs here), one core evaluates 11,000
// to 12,500 elements a second in batches of 1000 (circl's Evaluate: about
// 6,000), computes about 12,500 pseudonyms a second directly, and runs the
// partner's whole round trip, the service's evaluation included, for about
// 2,500 distinct numbers a second (4,000 to 5,000 on both cores):
//
//	go test -run '^$' -bench . -benchtime 5s ./partner
//
// # Files coming back
//
// A partner sends its file back keyed by LopNr or by pseudonym, as CSV with
// a delimiter it names ([ParseDelimiter]). [ConvertImport] reads it and keeps
// the rows of the project's persons, each with its canonical number in place
// of the key: the source and the cohort of a supplementary delivery. Its
// errors ([ImportError]) name what is wrong, never a value from the file;
// a line longer than [ImportOptions].MaxLine is refused naming the line. The
// counts it returns ([ImportCounts]) are for the extraction team: the
// service tells the partner only how many rows it received, since how many
// matched would say who is in the cohort.
package partner
