// Package extract turns a linked job into a delivery: for each source, the
// approved variables with their transforms and LopNr in place of the
// identity number, written as CSV or Parquet, compressed with zstd,
// encrypted with age and streamed to a [Sink] (S3 or a local directory),
// with a signed manifest, a codebook per file and a README for the
// researcher.
package extract
