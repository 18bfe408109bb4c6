// peakRSS reads this process's peak resident set size as the kernel
// recorded it (VmHWM in /proc/self/status), in bytes; 0 when unreadable
// (not Linux).
package main

import (
	"bufio"
	"os"
	"strconv"
	"strings"
)

func peakRSS() uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				return 0
			}
			return kb * 1024
		}
	}
	return 0
}
