package libvirt

import "os"

// pointsToRun is which operations an every-operation test injects at:
// all of them, or under `make test` (CRASHTEST_POINTS=sample, as the
// crash harness reads it) the first, the last and every third, so that the
// suite stays within its time; `make crashtest` and a plain go test run all.
func pointsToRun(total int) []int {
	var ns []int
	for n := 1; n <= total; n++ {
		if os.Getenv("CRASHTEST_POINTS") != "sample" || n == 1 || n == total || n%3 == 0 {
			ns = append(ns, n)
		}
	}
	return ns
}
