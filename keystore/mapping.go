package keystore

import (
	"bytes"
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/lopnr/lopnr/linkage/personnummer"
)

// RunNumber is a person's löpnummer (LopNr) in one project: 1, 2, 3, …
type RunNumber int64

const (
	// chunkPersons bounds the persons in one mapping chunk: 12 bytes each,
	// so a chunk is at most 600 kB before compression and well under the
	// entry limits of Vault's storage backends (1 MiB for raft by default).
	chunkPersons = 50_000
	// maxAttempts bounds the check-and-set retries of one call.
	maxAttempts = 50
	// ioParallel bounds concurrent chunk reads and writes.
	ioParallel = 4
)

// head is a project's mapping index, moved forward by check-and-set.
type head struct {
	Persons int64       `json:"persons"` // the highest LopNr handed out
	Chunks  []chunkInfo `json:"chunks"`
}

type chunkInfo struct {
	ID    string    `json:"id"`
	First RunNumber `json:"first"` // LopNr of the chunk's first number
	Count int       `json:"count"`
}

// mapping is what a Keystore has read of a project's kodnyckel. Chunks are
// immutable, so it only grows.
type mapping struct {
	mu       sync.Mutex
	chunks   map[string][]byte // chunk id -> 12-byte canonical numbers in LopNr order
	byNumber map[[12]byte]RunNumber
}

var (
	zenc, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault))
	zdec, _ = zstd.NewReader(nil, zstd.WithDecoderMaxMemory(64<<20), zstd.WithDecoderConcurrency(0))
)

// chunkMagic opens every stored chunk: format version 1.
var chunkMagic = []byte("LNRC1")

// encodeChunk stores numbers (12 bytes each, in LopNr order from first).
func encodeChunk(first RunNumber, numbers []byte) []byte {
	raw := make([]byte, 12, 12+len(numbers))
	binary.BigEndian.PutUint64(raw, uint64(first))
	binary.BigEndian.PutUint32(raw[8:], uint32(len(numbers)/12))
	raw = append(raw, numbers...)
	return zenc.EncodeAll(raw, append([]byte{}, chunkMagic...))
}

func decodeChunk(data []byte, want chunkInfo) ([]byte, error) {
	rest, ok := bytes.CutPrefix(data, chunkMagic)
	if !ok {
		return nil, errors.New("not a mapping chunk")
	}
	raw, err := zdec.DecodeAll(rest, nil)
	if err != nil {
		return nil, err
	}
	if len(raw) < 12 {
		return nil, errors.New("short chunk")
	}
	first, count := RunNumber(binary.BigEndian.Uint64(raw)), int(binary.BigEndian.Uint32(raw[8:]))
	if first != want.First || count != want.Count || len(raw)-12 != 12*count {
		return nil, fmt.Errorf("chunk holds %d numbers from %d, head says %d from %d", count, first, want.Count, want.First)
	}
	return raw[12:], nil
}

func (k *Keystore) mappingOf(id string) *mapping {
	k.mu.Lock()
	defer k.mu.Unlock()
	m := k.cache[id]
	if m == nil {
		m = &mapping{chunks: map[string][]byte{}, byNumber: map[[12]byte]RunNumber{}}
		k.cache[id] = m
	}
	return m
}

func (k *Keystore) forget(id string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.cache, id)
}

// readHead returns the project's head and its version (0: none yet).
func (k *Keystore) readHead(ctx context.Context, id string) (head, int, error) {
	e, err := k.store.Read(ctx, headPath(id))
	if errors.Is(err, ErrNotFound) {
		return head{}, 0, nil
	}
	if err != nil {
		return head{}, 0, fmt.Errorf("project %q: read head: %w", id, err)
	}
	var h head
	if err := json.Unmarshal(e.Data, &h); err != nil {
		return head{}, 0, fmt.Errorf("project %q: head record is corrupt: %v", id, err)
	}
	return h, e.Version, nil
}

// load reads every chunk of h that m does not have yet.
func (k *Keystore) load(ctx context.Context, id string, m *mapping, h head) error {
	m.mu.Lock()
	var missing []chunkInfo
	for _, c := range h.Chunks {
		if _, ok := m.chunks[c.ID]; !ok {
			missing = append(missing, c)
		}
	}
	m.mu.Unlock()
	return parallel(ctx, len(missing), func(ctx context.Context, i int) error {
		c := missing[i]
		e, err := k.store.Read(ctx, chunkPath(id, c.ID))
		if err != nil {
			return fmt.Errorf("project %q: read mapping chunk %s: %w", id, c.ID, err)
		}
		nums, err := decodeChunk(e.Data, c)
		if err != nil {
			return fmt.Errorf("project %q: mapping chunk %s is corrupt: %v", id, c.ID, err)
		}
		return m.add(id, c, nums)
	})
}

func (m *mapping) add(id string, c chunkInfo, nums []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.chunks[c.ID]; ok {
		return nil
	}
	for i := 0; i < c.Count; i++ {
		key := [12]byte(nums[12*i : 12*i+12])
		if _, dup := m.byNumber[key]; dup {
			// Never reached while every writer goes through head's
			// check-and-set; refuse rather than hand out two LopNr.
			return fmt.Errorf("project %q: mapping chunk %s repeats a person: the kodnyckel is inconsistent", id, c.ID)
		}
		m.byNumber[key] = c.First + RunNumber(i)
	}
	m.chunks[c.ID] = nums
	return nil
}

// Assign returns each person's LopNr in the project, assigning the next
// integers to persons it has not seen, in keyed order. Every number must be
// linkable (a personnummer or samordningsnummer). The new assignments are
// stored before Assign returns; concurrent calls, in this process or others,
// never give one LopNr to two persons nor two LopNr to one person.
func (k *Keystore) Assign(ctx context.Context, id string, numbers []personnummer.Number) ([]RunNumber, error) {
	for i, n := range numbers {
		if !n.Linkable() {
			return nil, fmt.Errorf("%w: numbers[%d] is not linkable (%s)", ErrInvalidArgument, i, n)
		}
	}
	if _, err := k.usableProject(ctx, id); err != nil {
		return nil, err
	}
	sec, err := k.readSecrets(ctx, id)
	if err != nil {
		return nil, err
	}
	m := k.mappingOf(id)
	out := make([]RunNumber, len(numbers))
	for attempt := 0; ; attempt++ {
		// Checked on every attempt: a retry must not outlive a
		// destruction that started meanwhile.
		p, err := k.usableProject(ctx, id)
		if err != nil {
			return nil, err
		}
		h, version, err := k.readHead(ctx, id)
		if err != nil {
			return nil, err
		}
		if err := k.load(ctx, id, m, h); err != nil {
			return nil, err
		}

		// Who is new? Each new person once, however often they appear.
		m.mu.Lock()
		seen := make(map[[12]byte]struct{})
		var fresh [][12]byte
		for i, n := range numbers {
			key := n.Key()
			if r, ok := m.byNumber[key]; ok {
				out[i] = r
				continue
			}
			if _, ok := seen[key]; !ok {
				seen[key] = struct{}{}
				fresh = append(fresh, key)
			}
		}
		m.mu.Unlock()
		if len(fresh) == 0 {
			return out, nil
		}

		keyedOrder(sec.OrderKey, fresh)
		newHead := head{Persons: h.Persons + int64(len(fresh)), Chunks: slices.Clone(h.Chunks)}
		var written []chunkInfo
		var blobs [][]byte
		for start := 0; start < len(fresh); start += chunkPersons {
			end := min(start+chunkPersons, len(fresh))
			idBytes, err := k.random(16)
			if err != nil {
				return nil, err
			}
			c := chunkInfo{ID: hex.EncodeToString(idBytes), First: RunNumber(h.Persons) + RunNumber(start) + 1, Count: end - start}
			nums := make([]byte, 0, 12*c.Count)
			for _, key := range fresh[start:end] {
				nums = append(nums, key[:]...)
			}
			written = append(written, c)
			blobs = append(blobs, nums)
		}
		err = parallel(ctx, len(written), func(ctx context.Context, i int) error {
			_, err := k.store.Write(ctx, chunkPath(id, written[i].ID), encodeChunk(written[i].First, blobs[i]), 0, p.pathMeta())
			return err
		})
		if err == nil {
			newHead.Chunks = append(newHead.Chunks, written...)
			var data []byte
			if data, err = json.Marshal(newHead); err == nil {
				_, err = k.store.Write(ctx, headPath(id), data, version, p.pathMeta())
			}
		}
		if err != nil {
			// Our chunks are not in any head: remove them, whatever
			// happened, so no unreferenced mapping lingers.
			k.discard(id, written)
			if errors.Is(err, ErrConflict) && attempt < maxAttempts {
				if err := k.backoff(ctx, attempt); err != nil {
					return nil, err
				}
				continue
			}
			return nil, fmt.Errorf("project %q: store new run numbers: %w", id, err)
		}
		for i, c := range written {
			if err := m.add(id, c, blobs[i]); err != nil {
				return nil, err
			}
		}
		m.mu.Lock()
		for i, n := range numbers {
			if out[i] == 0 {
				out[i] = m.byNumber[n.Key()]
			}
		}
		m.mu.Unlock()
		return out, nil
	}
}

// discard destroys chunks that no head refers to, on a fresh context so
// that a cancelled call still cleans up.
func (k *Keystore) discard(id string, chunks []chunkInfo) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, c := range chunks {
		k.store.Destroy(ctx, chunkPath(id, c.ID))
	}
}

// keyedOrder sorts numbers by HMAC-SHA256(orderKey, number).
func keyedOrder(orderKey []byte, numbers [][12]byte) {
	type tagged struct {
		tag [32]byte
		num [12]byte
	}
	t := make([]tagged, len(numbers))
	mac := hmac.New(sha256.New, orderKey)
	for i, n := range numbers {
		mac.Reset()
		mac.Write(n[:])
		mac.Sum(t[i].tag[:0])
		t[i].num = n
	}
	slices.SortFunc(t, func(a, b tagged) int { return bytes.Compare(a.tag[:], b.tag[:]) })
	for i := range t {
		numbers[i] = t[i].num
	}
}

// Lookup returns each person's LopNr in the project, 0 for a person who has
// none. It assigns nothing.
func (k *Keystore) Lookup(ctx context.Context, id string, numbers []personnummer.Number) ([]RunNumber, error) {
	if _, err := k.usableProject(ctx, id); err != nil {
		return nil, err
	}
	m := k.mappingOf(id)
	h, _, err := k.readHead(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := k.load(ctx, id, m, h); err != nil {
		return nil, err
	}
	out := make([]RunNumber, len(numbers))
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, n := range numbers {
		if n.Linkable() {
			out[i] = m.byNumber[n.Key()]
		}
	}
	return out, nil
}

// Reidentify returns the identity number behind a LopNr. The reason is
// required; the caller audits it with the caller's identity.
func (k *Keystore) Reidentify(ctx context.Context, id string, r RunNumber, reason string) (personnummer.Number, error) {
	if err := needReason(id, reason); err != nil {
		return personnummer.Number{}, err
	}
	if _, err := k.usableProject(ctx, id); err != nil {
		return personnummer.Number{}, err
	}
	h, _, err := k.readHead(ctx, id)
	if err != nil {
		return personnummer.Number{}, err
	}
	for _, c := range h.Chunks {
		if r < c.First || r >= c.First+RunNumber(c.Count) {
			continue
		}
		m := k.mappingOf(id)
		if err := k.load(ctx, id, m, head{Chunks: []chunkInfo{c}}); err != nil {
			return personnummer.Number{}, err
		}
		m.mu.Lock()
		i := int(r - c.First)
		key := string(m.chunks[c.ID][12*i : 12*i+12])
		m.mu.Unlock()
		// The stored canonical form parses back to itself whatever the
		// reference date, being at least as old as the mapping.
		n := personnummer.Parse(key, k.clock.Now())
		if !n.Valid() {
			return personnummer.Number{}, fmt.Errorf("project %q: LopNr %d: stored number does not parse (%s)", id, r, n.Reason())
		}
		return n, nil
	}
	return personnummer.Number{}, fmt.Errorf("project %q: LopNr %d: %w", id, r, ErrNotFound)
}

// Mappings calls fn for every person in the project's kodnyckel, in LopNr
// order, with the canonical 12-digit personnummer and its LopNr. It fails as
// the other calls do for a destroyed project ([ErrDestroyed], naming the
// date) or one past its retention ([ErrExpired]). It is for the key file a
// registered partner may receive and for matching a partner's pseudonyms;
// the caller audits it. An error from fn stops the iteration and is
// returned as it is.
//
// The mapping is read into the Keystore's cache as Lookup reads it, and fn
// reads the cached chunks in place: no second copy of the mapping is made.
func (k *Keystore) Mappings(ctx context.Context, id string, fn func(canonical string, r RunNumber) error) error {
	if _, err := k.usableProject(ctx, id); err != nil {
		return err
	}
	h, _, err := k.readHead(ctx, id)
	if err != nil {
		return err
	}
	m := k.mappingOf(id)
	if err := k.load(ctx, id, m, h); err != nil {
		return err
	}
	// Checked again: a destruction may have begun while the chunks were
	// read, and from then on the kodnyckel must not be handed out.
	if _, err := k.usableProject(ctx, id); err != nil {
		return err
	}
	chunks := slices.Clone(h.Chunks)
	slices.SortFunc(chunks, func(a, b chunkInfo) int { return cmp.Compare(a.First, b.First) })
	for _, c := range chunks {
		if err := ctx.Err(); err != nil {
			return err
		}
		// Chunks are immutable once loaded: the slice is read without
		// the lock, so that fn may call the Keystore.
		m.mu.Lock()
		nums := m.chunks[c.ID]
		m.mu.Unlock()
		for i := range c.Count {
			if err := fn(string(nums[12*i:12*i+12]), c.First+RunNumber(i)); err != nil {
				return err
			}
		}
	}
	return nil
}

// Persons returns the number of persons with a LopNr in the project.
func (k *Keystore) Persons(ctx context.Context, id string) (int64, error) {
	if _, _, err := k.readProject(ctx, id); err != nil {
		return 0, err
	}
	h, _, err := k.readHead(ctx, id)
	return h.Persons, err
}

// backoff waits a little, growing with the attempt, with jitter so that
// competing writers spread out.
func (k *Keystore) backoff(ctx context.Context, attempt int) error {
	d := time.Duration(1+min(attempt, 8)) * 5 * time.Millisecond
	d += time.Duration(rand.Int64N(int64(d)))
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// parallel runs fn for 0..n-1 with at most ioParallel at once and returns
// the first error.
func parallel(ctx context.Context, n int, fn func(context.Context, int) error) error {
	if n == 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		next     int
	)
	for w := 0; w < min(n, ioParallel); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				stop := firstErr != nil
				mu.Unlock()
				if i >= n || stop {
					return
				}
				if err := fn(ctx, i); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
						cancel()
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return firstErr
}
