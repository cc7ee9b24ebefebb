package audit

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// A key for the example only: a real one is made by NewSignerKey and kept
// in the key store.
const exampleKey = "PRIVATE+KEY+lopnrd.region.example/audit+a7417f00+AfcPGrduDfa9lcoVUS3JUFcnCeZNXbYupkI+H2H12kiQ"

func ExampleLog_Checkpoint() {
	dir, _ := os.MkdirTemp("", "audit")
	defer os.RemoveAll(dir)
	clock := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	l, _ := Open(filepath.Join(dir, "audit.log"), func() time.Time { clock = clock.Add(time.Second); return clock })
	defer l.Close()
	ctx := context.Background()
	if err := l.EnableCheckpoints(ctx, []byte(exampleKey), &memKeeper{}); err != nil {
		fmt.Println(err)
		return
	}
	l.Append(Entry{Identity: "CN=anna,O=Region Exempel", Action: "job.submit", Project: "p1", Job: "j1", Outcome: "ok"})
	l.Intend(ctx, Entry{Identity: "CN=bo,O=Region Exempel", Action: "delivery.release", Project: "p1", Job: "j1"})
	cp, _ := l.Checkpoint(ctx)
	fmt.Print(string(cp.Note))
	fmt.Println(l.VerifierKey())
	// Output:
	// lopnrd.region.example/audit
	// 2
	// iaOa6pxdeQbcBkoHz8mEIoZHM5VyPSOuV26LQXP1c3M=
	//
	// — lopnrd.region.example/audit p0F/AEo2DLcBjMAf7j8zNyFqcxoobaHHJ7OETNL19FeaHzYhk03RJiEaOWNBzpP/aP2yfYGPqHLZ1unWtLEf/nmLGAs=
	// lopnrd.region.example/audit+a7417f00+ARMaSKetfZlhbJ+iinjauXilr2FqldXAvjP1CP/TL2Vz
}
