package personnummer

import "fmt"

func ExampleRedact() {
	fmt.Println(Redact("reason: asked by 900101-9802, and 189001019802 too; dnr 2026-01234-01"))
	// Output: reason: asked by [redacted], and [redacted] too; dnr 2026-01234-01
}
