package extract

import (
	"io"

	"filippo.io/age"
)

// SealedWriter is the sealing pipeline (SHA-256, zstd, age, SHA-256) as a
// plain writer, for benchmarks of the pipeline against its raw tools.
type SealedWriter struct{ s *sealer }

// SealForBenchmark returns the delivery pipeline's sealing stage over dst.
func SealForBenchmark(dst io.Writer, recipients []age.Recipient) (*SealedWriter, error) {
	s, err := seal(dst, recipients, true)
	if err != nil {
		return nil, err
	}
	return &SealedWriter{s}, nil
}

func (w *SealedWriter) Write(p []byte) (int, error) { return w.s.Write(p) }

// Close finishes the stream.
func (w *SealedWriter) Close() error { _, err := w.s.Close(); return err }
