package main

import (
	"bufio"
	"context"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"

	"github.com/lopnr/lopnr/extract"
	"github.com/lopnr/lopnr/internal/synth"
	"github.com/lopnr/lopnr/internal/testenv"
	"github.com/lopnr/lopnr/keystore"
	"github.com/lopnr/lopnr/keystore/vault"
	"github.com/lopnr/lopnr/linkage/personnummer"
)

const partnerPolicy = `identities:
  "CN=drift,O=Region Test":    {global: [admin]}
  "CN=anna,O=Region Test":     {roles: {hjarta: [extractor]}}
  "CN=bo,O=Region Test":       {roles: {hjarta: [approver]}}
  "CN=cecilia,O=Region Test":  {roles: {hjarta: [approver, keyholder]}}
  "CN=forskare,O=Region Test": {roles: {hjarta: [researcher]}}
  "CN=scb,O=Region Test":      {roles: {hjarta: [partner]}}
  "CN=sos,O=Region Test":      {roles: {annat: [partner]}}
  "CN=revisor,O=Region Test":  {global: [auditor]}
`

// partnerApproved adds the partner's source and variables to the job's
// approved list.
var partnerApproved = synth.ApprovedWithPartner("scb_inkomst", "INKOMST", "AR", "KOMMUN")

// TestPartnerBlindLinkageEndToEnd is issue 7's proof against the real
// OpenBao (the kodnyckel) and S3 gateway (deliveries), over mutual TLS: a
// partner with its own certificate blind-links a generated file against a
// project's cohort with lopnr partner blind and upload; the matched counts,
// which reach the extraction team's job report and never the partner,
// equal what the generator put in; the supplementary delivery decrypts to
// the partner's rows under LopNr; the key file goes to the partner only,
// on a grant a second person approved, once; the rules and the partner's
// registration take effect only when a second person approves them;
// nothing the server logs or keeps holds an identity number; and a
// partner of another project, an exhausted budget and a destroyed
// kodnyckel are refused with clear errors.
func TestPartnerBlindLinkageEndToEnd(t *testing.T) {
	venv, s3env := testenv.Vault(t), testenv.S3(t)
	ctx := context.Background()
	run := "partner-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	store, err := vault.New(ctx, vault.Config{Address: venv.Addr, Token: venv.Token, Mount: "secret", Prefix: "lopnr/" + run})
	if err != nil {
		t.Fatal(err)
	}
	keys := keystore.New(store, keystore.Options{})
	scheme := "http://"
	if s3env.Secure {
		scheme = "https://"
	}
	sink, err := extract.NewS3Sink(ctx, extract.S3Config{Endpoint: scheme + s3env.Endpoint, AccessKey: s3env.AccessKey,
		SecretKey: s3env.SecretKey, Region: s3env.Region, Bucket: "lopnr-e2e", Prefix: run})
	if err != nil {
		t.Fatal(err)
	}
	s := startCLIServer(t, partnerPolicy, keys, sink)
	dir, sources, dataDir := s.dir, s.sources, s.dataDir
	ok, fails := s.ok, s.fails

	// The region's project and a delivery: its kodnyckel holds the cohort.
	if _, err := synth.Generate(filepath.Join(sources, "hjarta"), synth.Options{Persons: 1500, Seed: 17}); err != nil {
		t.Fatal(err)
	}
	spec, _ := os.ReadFile(filepath.Join(sources, "hjarta", synth.JobFile))
	jobFile := filepath.Join(dir, "job.yaml")
	os.WriteFile(jobFile, regexp.MustCompile(`(?m)^project: .*$`).ReplaceAll(spec, []byte("project: hjarta")), 0o600)
	approved := filepath.Join(dir, "approved.yaml")
	os.WriteFile(approved, []byte(partnerApproved), 0o600)
	researcher, _ := age.GenerateX25519Identity()
	ok("drift", "projects", "create", "hjarta", "--epm-dnr", "2026-00000-01", "--approved", approved, "--recipient", researcher.Recipient().String())
	s.approve("bo", "hjarta")
	ok("anna", "submit", jobFile, "--watch")

	// The partner's file: 2/3 of the cohort, and persons the region does
	// not have.
	var cohort []string
	if err := keys.Mappings(ctx, "hjarta", func(c string, _ keystore.RunNumber) error {
		cohort = append(cohort, c)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	partnerDir := filepath.Join(dir, "scb")
	os.Mkdir(partnerDir, 0o700)
	in := filepath.Join(partnerDir, "inkomst.csv")
	truth, err := synth.WritePartnerFile(in, synth.PartnerOptions{Members: cohort[:len(cohort)*2/3], Others: 400, RowsPerPerson: 2, Invalid: 25, Seed: 5})
	if err != nil {
		t.Fatal(err)
	}
	scbKey, _ := age.GenerateX25519Identity()
	out := filepath.Join(partnerDir, "inkomst.pseud.csv")

	fails("scb", "not registered as a partner", "partner", "blind", "--project", "hjarta", in, out)
	fails("sos", "PermissionDenied", "partners", "register", "hjarta", "CN=sos,O=Region Test", "--recipient", scbKey.Recipient().String(),
		"--budget", "10", "--exchange", "blind", "--reason", "the agreement with SoS")
	budget := strconv.FormatInt(truth.MemberPersons+truth.OtherPersons, 10)
	ok("bo", "partners", "register", "hjarta", "CN=scb,O=Region Test", "--recipient", scbKey.Recipient().String(), "--budget", budget,
		"--exchange", "keyfile,blind,import", "--reason", "the agreement with SCB, dnr 2026-17")
	fails("scb", "not registered as a partner", "partner", "blind", "--project", "hjarta", in, out)
	fails("bo", "four eyes", "projects", "approve", "hjarta", "c2")
	s.approve("cecilia", "hjarta")
	fails("sos", "PermissionDenied", "partner", "blind", "--project", "hjarta", in, filepath.Join(partnerDir, "sos.csv"))

	// Blind linkage: numbers stay with the partner; counts match the truth.
	blindOut := ok("scb", "partner", "blind", "--project", "hjarta", in, out)
	if want := strconv.FormatInt(truth.MemberPersons+truth.OtherPersons, 10) + " distinct persons"; !strings.Contains(blindOut, want) {
		t.Errorf("blind: %q, want %q", blindOut, want)
	}
	pseud, _ := os.ReadFile(out)
	testenv.NoIdentityNumbers(t, "the pseudonymised file", string(pseud))
	up := ok("scb", "partner", "upload", "--project", "hjarta", "--source", "scb_inkomst", "--keyed-by", "pseudonym",
		"--variable", "INKOMST", "--variable", "AR", "--variable", "KOMMUN", out)
	// The partner hears how many rows arrived, not how many matched.
	u := regexp.MustCompile(`^inkomst.pseud.csv: (\d+) rows received; supplementary delivery job (\S+)\n$`).FindStringSubmatch(up)
	if u == nil || u[1] != strconv.FormatInt(truth.Rows, 10) {
		t.Fatalf("upload: %q, want the %d rows received and the job, nothing more", up, truth.Rows)
	}
	job := u[2]
	// The extraction team reads the counts in the job's report.
	m := regexp.MustCompile(`(\d+) rows received, (\d+) of them of (\d+) of the project's persons, (\d+) matched nobody`).FindStringSubmatch(ok("anna", "jobs", "get", job))
	if m == nil {
		t.Fatalf("the import job's report lacks the import's counts")
	}
	if m[1] != strconv.FormatInt(truth.Rows, 10) || m[3] != strconv.FormatInt(truth.MemberPersons, 10) || m[2] != strconv.FormatInt(truth.MemberRows, 10) ||
		m[4] != strconv.FormatInt(truth.OtherRows+truth.InvalidRows, 10) {
		t.Errorf("the import counted %s rows, %s persons, %s matched rows, %s unmatched; the generator planted %+v", m[1], m[3], m[2], m[4], truth)
	}
	fails("scb", "PermissionDenied", "jobs", "get", job)
	w := ok("anna", "watch", job)
	d := regexp.MustCompile(`succeeded: delivery (\S+)`).FindStringSubmatch(w)
	if d == nil {
		t.Fatalf("supplementary job: %q", w)
	}
	fails("scb", "PermissionDenied", "release", "hjarta", d[1])
	ok("bo", "release", "hjarta", d[1])
	dl := t.TempDir()
	ok("forskare", "presign", "hjarta", d[1], "scb_inkomst.csv.zst.age", "--download", dl)
	plain := readAgeZstd(t, filepath.Join(dl, "scb_inkomst.csv.zst.age"), researcher)
	if !strings.HasPrefix(plain, "LopNr;INKOMST;AR;KOMMUN\n") || int64(strings.Count(plain, "\n")-1) != truth.MemberRows {
		t.Errorf("supplementary delivery: %d lines, header %q; want LopNr, the variables and %d rows", strings.Count(plain, "\n"), plain[:min(len(plain), 40)], truth.MemberRows)
	}
	testenv.NoIdentityNumbers(t, "the supplementary delivery", plain)

	// The key file, to the registered partner only, encrypted to its key.
	kf := filepath.Join(partnerDir, "keyfile.age")
	grant := strings.TrimSpace(ok("scb", "partner", "keyfile", "request", "--project", "hjarta", "--reason", "linking SCB's income register"))
	fails("scb", "waits for a second person", "partner", "keyfile", "get", "--project", "hjarta", "--grant", grant, "-o", kf)
	fails("bo", "four eyes", "partner", "keyfile", "approve", "hjarta", grant) // bo proposed the registration
	ok("cecilia", "partner", "keyfile", "approve", "hjarta", grant)
	ok("scb", "partner", "keyfile", "get", "--project", "hjarta", "--grant", grant, "-o", kf)
	fails("scb", "was used", "partner", "keyfile", "get", "--project", "hjarta", "--grant", grant, "-o", kf+".again")
	f, _ := os.Open(kf)
	r, err := age.Decrypt(f, scbKey)
	if err != nil {
		t.Fatalf("the partner cannot decrypt its key file: %v", err)
	}
	b, _ := io.ReadAll(r)
	f.Close()
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if lines[0] != "personnummer;LopNr" || len(lines)-1 != len(cohort) {
		t.Errorf("key file: %d lines after %q; want one per person of the kodnyckel (%d)", len(lines)-1, lines[0], len(cohort))
	}
	if pnr, _, _ := strings.Cut(lines[1], ";"); !personnummer.Parse(pnr, time.Now()).Linkable() {
		t.Error("the key file's first line holds no identity number")
	}
	// A file keyed by the key file's LopNr comes back the same way.
	var keyed strings.Builder
	keyed.WriteString("LopNr;INKOMST;AR;KOMMUN\n")
	for _, line := range lines[1:51] {
		_, lopnr, _ := strings.Cut(line, ";")
		keyed.WriteString(lopnr + ";250000;2024;0180\n")
	}
	keyed.WriteString("999999;1;2024;0180\n") // nobody's LopNr
	keyedFile := filepath.Join(partnerDir, "keyed.csv")
	os.WriteFile(keyedFile, []byte(keyed.String()), 0o600)
	up = ok("scb", "partner", "upload", "--project", "hjarta", "--source", "scb_inkomst", "--keyed-by", "lopnr",
		"--variable", "INKOMST", "--variable", "AR", keyedFile)
	keyedJob := up[strings.LastIndex(up, " ")+1 : len(up)-1]
	if !strings.Contains(up, "51 rows received") || !strings.Contains(ok("anna", "jobs", "get", keyedJob), "51 rows received, 50 of them of 50 of the project's persons, 1 matched nobody") {
		t.Errorf("upload keyed by LopNr: %q", up)
	}
	if w := ok("anna", "watch", keyedJob); !strings.Contains(w, "succeeded") {
		t.Errorf("the LopNr-keyed supplementary job: %q", w)
	}
	fails("sos", "PermissionDenied", "partner", "keyfile", "get", "--project", "hjarta", "--grant", grant, "-o", filepath.Join(partnerDir, "sos.age"))
	fails("forskare", "PermissionDenied", "partner", "keyfile", "get", "--project", "hjarta", "--grant", grant, "-o", filepath.Join(partnerDir, "f.age"))

	// The budget: a second run of the same file needs more than is left.
	fails("scb", "budget", "partner", "blind", "--project", "hjarta", in, filepath.Join(partnerDir, "again.csv"))

	// Nothing the server logs or keeps holds an identity number: not the
	// partner's (it never sees them), not the cohort's.
	testenv.NoIdentityNumbers(t, "the server's log", s.logs.String())
	auditLog, _ := os.ReadFile(s.auditFile)
	testenv.NoIdentityNumbers(t, "the audit log", string(auditLog))
	if !regexp.MustCompile(`"action":"partner.evaluate","project":"hjarta","outcome":"ok","reason":"\d+ elements evaluated in \d+ batches"`).Match(auditLog) {
		t.Error("the audit log does not count the evaluated elements")
	}
	filepath.WalkDir(dataDir, func(p string, e fs.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			b, _ := os.ReadFile(p)
			testenv.NoIdentityNumbers(t, p, string(b))
		}
		return nil
	})

	// A destroyed kodnyckel: blind linkage and key files are refused.
	ok("bo", "projects", "destroy", "hjarta", "--reason", "the study has ended")
	fails("scb", "destroyed", "partner", "blind", "--project", "hjarta", in, filepath.Join(partnerDir, "late.csv"))
	fails("scb", "destroyed", "partner", "keyfile", "request", "--project", "hjarta", "--reason", "one more time")
}

// readAgeZstd decrypts and decompresses a delivered file.
func readAgeZstd(t *testing.T, path string, id age.Identity) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := age.Decrypt(f, id)
	if err != nil {
		t.Fatalf("decrypt %s: %v", path, err)
	}
	zr, err := zstd.NewReader(bufio.NewReader(r))
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
