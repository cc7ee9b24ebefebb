package extract

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/text/encoding/charmap"

	"github.com/lopnr/lopnr/internal/synth"
	"github.com/lopnr/lopnr/keystore"
	"github.com/lopnr/lopnr/keystore/local"
	"github.com/lopnr/lopnr/linkage"
	"github.com/lopnr/lopnr/linkage/personnummer"
)

// testVariables replace the generated job's: every kind of transform.
const testVariables = `variables:
  - {source: par_sluten, column: HDIA, transform: truncate(3)}
  - {source: par_sluten, column: DIA1..DIA3, transform: "blank(I21,I22,E11)"}
  - {source: par_sluten, column: INDATUM, transform: year-month}
  - {source: par_sluten, column: OP, transform: truncate(3)}
  - {source: par_sluten, column: ALDER, transform: age-at-index}
  - {source: par_sluten, column: KON, transform: sex}
  - {source: lmed, column: ATC, transform: "select(C07,A10)"}
  - {source: lmed, column: EDATUM, transform: year}
  - {source: dors, column: DODSDAT, transform: year-month}
  - {source: dors, column: ULORSAK, transform: keep}
  - {source: takecare, column: Text, transform: keep}
`

// testApproval approves exactly testVariables, and the other sources the
// job reads.
var testApproval = Approval{Sources: []ApprovedSource{
	{Name: "par_sluten", Profile: "par-sluten"}, {Name: "lmed", Profile: "lmed"}, {Name: "dors", Profile: "dors"}, {Name: "takecare", Profile: "takecare"},
	{Name: "val_sluten", Profile: "val-slutenvard"}, {Name: "val_oppen", Profile: "val-oppenvard"}, {Name: "par_oppen", Profile: "par-oppen"},
	{Name: "reused", Profile: "cohort-list"}, {Name: "history", Profile: "pnr-history"},
}, Variables: []ApprovedVariable{
	{Source: "par_sluten", Column: "HDIA", Transforms: []string{"truncate(3)"}},
	{Source: "par_sluten", Column: "DIA1..DIA30", Transforms: []string{"blank(I,E)"}},
	{Source: "par_sluten", Column: "INDATUM", Transforms: []string{"year-month"}},
	{Source: "par_sluten", Column: "OP", Transforms: []string{"truncate(3)"}},
	{Source: "par_sluten", Column: "ALDER", Transforms: []string{"age-at-index"}},
	{Source: "par_sluten", Column: "KON", Transforms: []string{"sex"}},
	{Source: "lmed", Column: "ATC", Transforms: []string{"keep"}},
	{Source: "lmed", Column: "EDATUM", Transforms: []string{"year-month"}},
	{Source: "dors", Column: "DODSDAT", Transforms: []string{"keep"}},
	{Source: "dors", Column: "ULORSAK"},
	{Source: "takecare", Column: "Text"},
}}

type fixture struct {
	dir, out string
	spec     *linkage.JobSpec
	specRaw  []byte
	keys     *keystore.Keystore
	id       *age.X25519Identity
	signer   *Signer
}

// newFixture generates a job, rewrites its variables and outputs, and sets
// up a local key store, a researcher's identity and a signing key.
func newFixture(t *testing.T, outputs string) *fixture {
	t.Helper()
	f := &fixture{dir: t.TempDir(), out: t.TempDir()}
	if _, err := synth.Generate(f.dir, synth.Options{Persons: 1500, Seed: 11}); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(f.dir, "job.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(raw)
	s = s[:strings.Index(s, "variables:")] + testVariables + outputs
	f.specRaw = []byte(s)
	if err := os.WriteFile(filepath.Join(f.dir, "job.yaml"), f.specRaw, 0o600); err != nil {
		t.Fatal(err)
	}
	if f.spec, err = linkage.LoadSpec(filepath.Join(f.dir, "job.yaml")); err != nil {
		t.Fatal(err)
	}
	store, err := local.Open(filepath.Join(f.dir, "keystore"))
	if err != nil {
		t.Fatal(err)
	}
	f.keys = keystore.New(store, keystore.Options{})
	if _, err := f.keys.CreateProject(context.Background(), keystore.ProjectSpec{ID: f.spec.Project, EPMDnr: "2026-1"}); err != nil {
		t.Fatal(err)
	}
	if f.id, err = age.GenerateX25519Identity(); err != nil {
		t.Fatal(err)
	}
	if f.signer, err = LoadOrCreateSigner(filepath.Join(f.dir, "signing.key")); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) deliver(t *testing.T, appr Approval) (*Manifest, error) {
	t.Helper()
	res, err := linkage.Link(context.Background(), f.spec, linkage.Options{MemoryLimit: "1GB"})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	sink, err := NewDirSink(f.out)
	if err != nil {
		t.Fatal(err)
	}
	return Deliver(context.Background(), res, Options{
		Approval: appr, Keys: f.keys, Recipients: []age.Recipient{f.id.Recipient()},
		Sink: sink, Signer: f.signer, SpecBytes: f.specRaw, Release: true,
	})
}

// open decrypts (and decompresses) a delivered file.
func (f *fixture) open(t *testing.T, m *Manifest, name string) []byte {
	t.Helper()
	ct, err := os.ReadFile(filepath.Join(f.out, m.Project, m.Delivery, name))
	if err != nil {
		t.Fatal(err)
	}
	r, err := age.Decrypt(bytes.NewReader(ct), f.id)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if strings.HasSuffix(name, ".zst.age") {
		zr, err := zstd.NewReader(r)
		if err != nil {
			t.Fatal(err)
		}
		defer zr.Close()
		r = zr
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return b
}

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// scanForIdentities fails the test if any byte sequence of data is an
// identity number in any form.
func scanForIdentities(t *testing.T, name string, data []byte) {
	t.Helper()
	p := personnummer.NewParser(time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC))
	if hasIdentity(p, string(data)) {
		t.Errorf("%s holds an identity number", name)
	}
}

func TestDeliverCSV(t *testing.T) {
	f := newFixture(t, "outputs: {format: csv, delimiter: ';'}\n")
	m, err := f.deliver(t, testApproval)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(f.out, m.Project, m.Delivery)
	manifest, _ := os.ReadFile(filepath.Join(dir, "manifest.json"))
	sig, _ := os.ReadFile(filepath.Join(dir, "manifest.json.sig"))
	vm, err := VerifyManifest(manifest, sig, f.signer.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	if vm.SpecSHA256 != sha(f.specRaw) || len(vm.Files) != 4 {
		t.Fatalf("manifest: spec digest %s, %d files", vm.SpecSHA256, len(vm.Files))
	}
	if _, err := VerifyManifest(append([]byte(" "), manifest...), sig, f.signer.PublicKey()); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("an altered manifest verified: %v", err)
	}
	cohort := map[string]bool{}
	for _, mf := range vm.Files {
		ct, _ := os.ReadFile(filepath.Join(dir, mf.Name))
		if sha(ct) != mf.SHA256 || int64(len(ct)) != mf.Size {
			t.Errorf("%s: ciphertext does not match the manifest", mf.Name)
		}
		plain := f.open(t, vm, mf.Name)
		if sha(plain) != mf.PlainSHA256 || int64(len(plain)) != mf.PlainSize {
			t.Errorf("%s: plaintext does not match the manifest", mf.Name)
		}
		scanForIdentities(t, mf.Name, plain)
		scanForIdentities(t, mf.Codebook, f.open2(t, dir, mf.Codebook))
		r := csv.NewReader(bytes.NewReader(plain))
		r.Comma = ';'
		records, err := r.ReadAll()
		if err != nil {
			t.Fatalf("%s: %v", mf.Name, err)
		}
		if int64(len(records)-1) != mf.Rows || mf.Rows == 0 {
			t.Errorf("%s: %d records, manifest says %d rows", mf.Name, len(records)-1, mf.Rows)
		}
		header := records[0]
		if header[0] != "LopNr" {
			t.Errorf("%s: first column %q", mf.Name, header[0])
		}
		prev := 0
		for _, rec := range records[1:] {
			n, err := strconv.Atoi(rec[0])
			if err != nil || n < prev {
				t.Fatalf("%s: LopNr %q not in order", mf.Name, rec[0])
			}
			prev = n
			cohort[rec[0]] = true
			for i, v := range rec {
				checkValue(t, mf.Source, header[i], v)
			}
		}
	}
	// LopNr are 1..N for the cohort.
	for i := 1; i <= len(cohort); i++ {
		if !cohort[strconv.Itoa(i)] && i < len(cohort)/2 {
			t.Fatalf("LopNr %d missing: not dense", i)
		}
	}
	if readme := f.open2(t, dir, "README.txt"); !bytes.Contains(readme, []byte("age -d -i key.txt")) {
		t.Errorf("README does not say how to decrypt:\n%s", readme)
	}

	// A second delivery of the same job gives the same persons the same
	// LopNr: the same rows.
	m2, err := f.deliver(t, testApproval)
	if err != nil {
		t.Fatal(err)
	}
	for i, mf := range m.Files {
		if mf.PlainSHA256 != m2.Files[i].PlainSHA256 || mf.SHA256 == m2.Files[i].SHA256 {
			t.Errorf("%s: two deliveries of the same job should have the same plaintext and differ only in encryption", mf.Name)
		}
	}
}

func (f *fixture) open2(t *testing.T, dir, name string) []byte {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var (
	reYearMonth = regexp.MustCompile(`^\d{4}(-\d{2})?$`)
	reYear      = regexp.MustCompile(`^\d{4}$`)
)

// checkValue checks one delivered value against its transform.
func checkValue(t *testing.T, source, col, v string) {
	t.Helper()
	if v == "" {
		return
	}
	bad := func(why string) { t.Errorf("%s.%s: %q %s", source, col, v, why) }
	switch {
	case col == "HDIA" && len(v) > 3 && v != "BLANKED":
		bad("longer than truncate(3)")
	case col == "OP":
		for _, c := range strings.Fields(v) {
			if len(c) > 3 && c != "BLANKED" {
				bad("longer than truncate(3)")
			}
		}
	case strings.HasPrefix(col, "DIA") && v != "BLANKED" && !regexp.MustCompile(`^(I21|I22|E11)`).MatchString(strings.ReplaceAll(v, ".", "")):
		bad("outside blank(I21,I22,E11) is not BLANKED")
	case col == "ATC" && !strings.HasPrefix(v, "C07") && !strings.HasPrefix(v, "A10"):
		bad("outside select(C07,A10)")
	case col == "INDATUM" && !reYearMonth.MatchString(v), col == "DODSDAT" && !reYearMonth.MatchString(v):
		bad("is not YYYY-MM")
	case col == "EDATUM" && !reYear.MatchString(v):
		bad("is not YYYY")
	case col == "KON" && v != "M" && v != "F":
		bad("is not M or F")
	case col == "ALDER":
		if n, err := strconv.Atoi(v); err != nil || n < 18 || n > 140 {
			bad("is not an age of 18 or more")
		}
	}
}

func TestDeliverParquetAndWindows1252(t *testing.T) {
	f := newFixture(t, "outputs: {format: parquet}\n")
	m, err := f.deliver(t, testApproval)
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range m.Files {
		if !strings.HasSuffix(mf.Name, ".parquet.age") {
			t.Errorf("file %s", mf.Name)
		}
		plain := f.open(t, m, mf.Name)
		if !bytes.HasPrefix(plain, []byte("PAR1")) || sha(plain) != mf.PlainSHA256 {
			t.Errorf("%s: not the Parquet file of the manifest", mf.Name)
		}
	}

	f = newFixture(t, "outputs: {format: csv, encoding: windows-1252, line_ending: crlf, delimiter: ','}\n")
	m, err = f.deliver(t, testApproval)
	if err != nil {
		t.Fatal(err)
	}
	plain := f.open(t, m, "takecare.csv.zst.age")
	if !bytes.Contains(plain, []byte("\r\n")) || bytes.Contains(bytes.ReplaceAll(plain, []byte("\r\n"), nil), []byte("\n")) {
		t.Error("takecare: line endings are not CRLF")
	}
	utf8, err := charmap.Windows1252.NewDecoder().Bytes(plain)
	if err != nil || !bytes.ContainsAny(utf8, "åäö") || !strings.HasPrefix(string(utf8), "LopNr,") {
		t.Errorf("takecare: not windows-1252 with Swedish letters and ',' (%v)", err)
	}
}

func TestDeliverRefusesWhatIsNotApproved(t *testing.T) {
	f := newFixture(t, "outputs: {format: csv}\n")
	appr := testApproval
	appr.Variables = slices.Clone(appr.Variables)
	appr.Variables[0] = ApprovedVariable{Source: "par_sluten", Column: "HDIA", Transforms: []string{"truncate(2)"}}
	appr.Variables = slices.DeleteFunc(appr.Variables, func(v ApprovedVariable) bool { return v.Column == "ALDER" })
	_, err := f.deliver(t, appr)
	if !errors.Is(err, ErrNotApproved) || !strings.Contains(err.Error(), "variables[0]: par_sluten.HDIA with truncate(3) is not on the project's approved variable list") ||
		!strings.Contains(err.Error(), "variables[4]: par_sluten.ALDER with age-at-index") {
		t.Fatalf("err = %v", err)
	}
	// Nothing ran: no LopNr was assigned, nothing was staged or published.
	if n, _ := f.keys.Persons(context.Background(), f.spec.Project); n != 0 {
		t.Errorf("%d persons got a LopNr although the job was refused", n)
	}
	if n := countFiles(f.out); n != 0 {
		t.Errorf("the sink has %d files after a refused job", n)
	}
}

func TestLeakGuardStopsTheDelivery(t *testing.T) {
	f := newFixture(t, "outputs: {format: csv}\n")
	// Plant an identity number in TakeCare's free text.
	secret := testNumber(t, 30000)
	if !personnummer.NewParser(time.Now()).Parse(secret).Valid() {
		t.Fatal("bad test number")
	}
	plantInTakeCare(t, f, secret)
	_, err := f.deliver(t, testApproval)
	var le *LeakError
	if !errors.As(err, &le) || le.File != "takecare.csv.zst.age" || le.Column != "Text" || le.Values < 1 {
		t.Fatalf("err = %v, want a LeakError naming takecare's Text", err)
	}
	if strings.Contains(err.Error(), secret[2:8]) {
		t.Fatal("the leak guard's error holds the number")
	}
	if n := countFiles(f.out); n != 0 {
		t.Errorf("a stopped delivery left %d files", n)
	}
	// Approved delivery with personnummer passes.
	appr := testApproval
	appr.AllowPersonnummer = true
	if _, err := f.deliver(t, appr); err != nil {
		t.Fatalf("with personnummer approved: %v", err)
	}
}

func TestHasIdentity(t *testing.T) {
	p := personnummer.NewParser(time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC))
	n := testNumber(t, 30000)
	for _, tc := range []struct {
		s    string
		want bool
	}{
		{n, true}, {n[2:], true}, {n[2:8] + "-" + n[8:], true}, {n[:8] + "-" + n[8:], true},
		{"text " + n[2:8] + "+" + n[8:] + ".", true},
		{n[:11] + string('0'+(n[11]-'0'+1)%10), false}, {"1" + n, false}, {n + "0", false}, {"2020-01-01", false}, {"I219", false}, {"", false},
	} {
		if got := hasIdentity(p, tc.s); got != tc.want {
			t.Errorf("hasIdentity(case %d) = %t, want %t", len(tc.s), got, tc.want)
		}
	}
}

// testNumber returns line i of Skatteverket's test personnummer.
func testNumber(t *testing.T, i int) string {
	t.Helper()
	b, err := os.ReadFile("../testdata/skatteverket/testpersonnummer.txt")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(string(b), "\n")[i]
}

// countFiles counts the regular files below dir, staging included.
func countFiles(dir string) int {
	n := 0
	filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return nil
	})
	return n
}

func newZstdReader(r io.Reader) (*zstd.Decoder, error) { return zstd.NewReader(r) }

// failingSink fails the second file it is asked to create, as a full disk
// or a lost connection would half-way through a delivery.
type failingSink struct {
	Sink
	created int
}

type failingStaging struct {
	Staging
	s *failingSink
}

func (f *failingSink) Begin(ctx context.Context, project, id string) (Staging, error) {
	st, err := f.Sink.Begin(ctx, project, id)
	return &failingStaging{st, f}, err
}

func (f *failingStaging) Create(ctx context.Context, name string) (io.WriteCloser, error) {
	f.s.created++
	if f.s.created == 3 {
		return nil, errors.New("no space left on device")
	}
	return f.Staging.Create(ctx, name)
}

func TestFailureMidwayLeavesNothingAndRetryKeepsLopNr(t *testing.T) {
	f := newFixture(t, "outputs: {format: csv}\n")
	res, err := linkage.Link(context.Background(), f.spec, linkage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	sink, _ := NewDirSink(f.out)
	_, err = Deliver(context.Background(), res, Options{Approval: testApproval, Keys: f.keys, Recipients: []age.Recipient{f.id.Recipient()},
		Sink: &failingSink{Sink: sink}, Signer: f.signer, SpecBytes: f.specRaw})
	res.Close()
	if err == nil || !strings.Contains(err.Error(), "no space left on device") {
		t.Fatalf("err = %v", err)
	}
	if n := countFiles(f.out); n != 0 {
		t.Fatalf("a failed delivery left %d files", n)
	}
	persons, _ := f.keys.Persons(context.Background(), f.spec.Project)
	if persons == 0 {
		t.Fatal("run numbers were not stored before the outputs")
	}
	// The retry succeeds and hands out no new run numbers.
	m, err := f.deliver(t, testApproval)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := f.keys.Persons(context.Background(), f.spec.Project); again != persons {
		t.Fatalf("the retry assigned %d new run numbers", again-persons)
	}
	if len(m.Files) != 4 {
		t.Fatalf("retry delivered %d files", len(m.Files))
	}
}

// plantInTakeCare puts an identity number into the free text of every
// unquoted TakeCare row, so that cohort members have it too.
func plantInTakeCare(t *testing.T, f *fixture, secret string) {
	t.Helper()
	path := filepath.Join(f.dir, "takecare.csv")
	raw, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(raw), "\r\n"), "\n")
	for i := 1; i < len(lines); i++ {
		// In every row, so that cohort members have it too.
		line := strings.TrimRight(lines[i], "\r")
		if strings.HasSuffix(line, "\"") {
			continue // a quoted free text: leave it
		}
		fields := strings.Split(line, ";")
		fields[len(fields)-1] = "patient said " + secret[2:8] + "-" + secret[8:]
		lines[i] = strings.Join(fields, ";")
	}
	os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600)
}

// recordingSink records the order in which a delivery's files are created
// and closed.
type recordingSink struct {
	Sink
	mu     sync.Mutex
	events []string
}

type recordingStaging struct {
	Staging
	s *recordingSink
}

type recordingFile struct {
	io.WriteCloser
	s    *recordingSink
	name string
}

func (r *recordingSink) record(e string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recordingSink) Begin(ctx context.Context, project, id string) (Staging, error) {
	st, err := r.Sink.Begin(ctx, project, id)
	return &recordingStaging{st, r}, err
}

func (r *recordingStaging) Create(ctx context.Context, name string) (io.WriteCloser, error) {
	w, err := r.Staging.Create(ctx, name)
	r.s.record("create " + name)
	return &recordingFile{w, r.s, name}, err
}

func (r *recordingStaging) Commit(ctx context.Context) error {
	r.s.record("commit")
	return r.Staging.Commit(ctx)
}

func (f *recordingFile) Close() error {
	err := f.WriteCloser.Close()
	f.s.record("close " + f.name)
	return err
}

// TestDeliverStagesUntilReleased: a delivery made for a server is staged
// beside the researchers' directory, whole and signed, with its signature
// written after every other file is complete; nothing of it is in the
// researchers' directory, and no link is signed for it, until Release.
func TestDeliverStagesUntilReleased(t *testing.T) {
	f := newFixture(t, "outputs: {format: csv}\n")
	res, err := linkage.Link(context.Background(), f.spec, linkage.Options{MemoryLimit: "1GB"})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	staging := filepath.Join(t.TempDir(), "staging")
	sink, err := NewStagedDirSink(f.out, staging)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recordingSink{Sink: sink}
	m, err := Deliver(context.Background(), res, Options{Approval: testApproval, Keys: f.keys, Recipients: []age.Recipient{f.id.Recipient()},
		Sink: rec, Signer: f.signer, SpecBytes: f.specRaw})
	if err != nil {
		t.Fatal(err)
	}
	if n := countFiles(f.out); n != 0 {
		t.Fatalf("before release, the researchers' directory holds %d files", n)
	}
	staged := filepath.Join(staging, m.Project, m.Delivery)
	if n := countFiles(staged); n != 4*2+3 {
		t.Fatalf("staged %d files, want 4 data files, 4 codebooks, the README, the manifest and its signature", n)
	}
	for _, name := range []string{"manifest.json.sig", m.Files[0].Name, "README.txt"} {
		if _, err := sink.Presign(context.Background(), m.Project, m.Delivery, name, time.Hour); !errors.Is(err, ErrNotPublished) {
			t.Fatalf("presign %s of a staged delivery: %v, want ErrNotPublished", name, err)
		}
	}
	// The signature is created after every other file is closed, and the
	// delivery committed after it.
	ev := rec.events
	sig := slices.Index(ev, "create manifest.json.sig")
	if sig < 0 || ev[len(ev)-1] != "commit" || ev[len(ev)-2] != "close manifest.json.sig" {
		t.Fatalf("events %v: want the signature created and closed last, then the commit", ev)
	}
	for _, e := range ev[:sig] {
		if name, ok := strings.CutPrefix(e, "create "); ok && !slices.Contains(ev[:sig], "close "+name) {
			t.Errorf("%s was still open when the signature was created", name)
		}
	}

	if err := sink.Release(context.Background(), m.Project, m.Delivery); err != nil {
		t.Fatal(err)
	}
	if n := countFiles(staged); n != 0 {
		t.Errorf("after release, %d files are left staged", n)
	}
	dir := filepath.Join(f.out, m.Project, m.Delivery)
	for _, c := range verifyDir(t, f, dir).Check(os.DirFS(dir)) {
		if c.Err != nil {
			t.Errorf("released delivery: %s: %v", c.Name, c.Err)
		}
	}
}

// verifyDir verifies the signed manifest of the delivery in dir.
func verifyDir(t *testing.T, f *fixture, dir string) *Manifest {
	t.Helper()
	manifest, sig := f.open2(t, dir, "manifest.json"), f.open2(t, dir, "manifest.json.sig")
	m, err := VerifyManifest(manifest, sig, f.signer.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestOperatorCannotAlterCodebookOrReadmeUnseen replays the README and
// codebook part of finding 11 of issue 15: someone who can write to the
// delivery's directory changes a codebook (to say what a column holds is
// something else) or the README (to tell the researcher to send the data
// somewhere); the signed manifest lists both, and the check names the file.
func TestOperatorCannotAlterCodebookOrReadmeUnseen(t *testing.T) {
	f := newFixture(t, "outputs: {format: csv}\n")
	m, err := f.deliver(t, testApproval)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(f.out, m.Project, m.Delivery)
	vm := verifyDir(t, f, dir)
	var docs []string
	for _, d := range vm.Documents {
		docs = append(docs, d.Name)
	}
	want := []string{"par_sluten.codebook.csv", "lmed.codebook.csv", "dors.codebook.csv", "takecare.codebook.csv", "README.txt"}
	if slices.Sort(docs); !slices.Equal(docs, slices.Sorted(slices.Values(want))) {
		t.Fatalf("the manifest's documents are %v, want every codebook and the README", docs)
	}
	checkAll := func() map[string]error {
		out := map[string]error{}
		for _, c := range vm.Check(os.DirFS(dir)) {
			out[c.Name] = c.Err
		}
		return out
	}
	for name, err := range checkAll() {
		if err != nil {
			t.Fatalf("untouched delivery: %s: %v", name, err)
		}
	}
	for _, name := range []string{"lmed.codebook.csv", "README.txt"} {
		path := filepath.Join(dir, name)
		orig := f.open2(t, dir, name)
		if err := os.WriteFile(path, append(bytes.Clone(orig), "ATC;text;keep;ATC;the patient's personnummer\n"...), 0o600); err != nil {
			t.Fatal(err)
		}
		got := checkAll()
		if !errors.Is(got[name], ErrFileAltered) {
			t.Errorf("after %s was changed, its check says %v; want ErrFileAltered", name, got[name])
		}
		os.Remove(path)
		if got := checkAll(); !errors.Is(got[name], ErrFileMissing) {
			t.Errorf("after %s was removed, its check says %v; want ErrFileMissing", name, got[name])
		}
		os.WriteFile(path, orig, 0o600)
	}
}
