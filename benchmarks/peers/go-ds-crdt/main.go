// Command go-ds-crdt-bench runs datastore-crdt's benchmark workloads on
// go-ds-crdt v0.6.8 (go-ds-leveldb, libp2p TCP on 127.0.0.1, gossipsub,
// bitswap), so `npm run bench` can set both side by side. See README.md.
//
//	go-ds-crdt-bench [-quick] [-out results.json] [-only batched,...]
//	go-ds-crdt-bench replica     # the syncing replica B (child process; see child.go)
//
// Results are a JSON list of {name, value, unit, baseline?, ratio?, note?,
// error?}, the shape benchmarks/run.mjs reads; a workload that fails gives
// rows with `error` and the others still run. Progress goes to stderr.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	logging "github.com/ipfs/go-log/v2"
)

// result is one row of the results table.
type result struct {
	Name     string   `json:"name"`
	Value    *float64 `json:"value"`
	Unit     string   `json:"unit"`
	Baseline *float64 `json:"baseline,omitempty"`
	Ratio    *float64 `json:"ratio,omitempty"`
	Note     string   `json:"note,omitempty"`
	Error    string   `json:"error,omitempty"`
}

func num(v float64) *float64 { return &v }

// workload is one of the benchmarks; rows lists the names of the rows it
// returns, so a failure can still name them.
type workload struct {
	name string
	rows []string
	run  func(quick bool) ([]result, error)
}

var workloads = []workload{
	{"batched", []string{"batched writes (1,000/batch)"}, batchedWrites},
	{"unbatched", []string{"unbatched puts", "unbatched puts, libp2p replica"}, unbatchedPuts},
	{"replication", []string{"replication A→B (TCP)", "peak RSS, replicating B", "replication A→B, single puts", "peak RSS, replicating B (single puts)"}, replication},
	{"catch-up", []string{"deep catch-up", "deep catch-up rate", "peak RSS, catching-up B"}, deepCatchUp},
	{"listing", []string{"listing: query() keys+values"}, listing},
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "replica" {
		quiet()
		if err := runChild(); err != nil {
			fmt.Fprintf(os.Stderr, "go-ds-crdt-bench replica: %v\n", err)
			os.Exit(1)
		}
		return
	}

	quick := flag.Bool("quick", false, "~10x smaller sizes, like the other benchmarks' --quick")
	out := flag.String("out", "", "write the results (JSON list) to this file")
	only := flag.String("only", "", "comma-separated workloads to run: batched,unbatched,replication,catch-up,listing")
	flag.Parse()
	quiet()

	var selected map[string]bool
	if *only != "" {
		selected = map[string]bool{}
		for _, s := range strings.Split(*only, ",") {
			selected[s] = true
		}
	}

	var results []result
	for _, w := range workloads {
		if selected != nil && !selected[w.name] {
			continue
		}
		t0 := time.Now()
		fmt.Fprintf(os.Stderr, "go-ds-crdt: %s...\n", w.name)
		rows, err := w.run(*quick)
		if err != nil {
			rows = rows[:0]
			for _, name := range w.rows {
				rows = append(rows, result{Name: name, Error: err.Error()})
			}
		}
		fmt.Fprintf(os.Stderr, "go-ds-crdt: %s took %.1f s\n", w.name, time.Since(t0).Seconds())
		results = append(results, rows...)
	}

	for _, r := range results {
		if r.Error != "" {
			fmt.Printf("%-40s  ERROR: %s\n", r.Name, r.Error)
		} else {
			fmt.Printf("%-40s  %12.1f %-7s %s\n", r.Name, *r.Value, r.Unit, r.Note)
		}
	}
	if *out != "" {
		b, err := json.MarshalIndent(results, "", "  ")
		if err == nil {
			err = os.WriteFile(*out, append(b, '\n'), 0o644)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "go-ds-crdt-bench: writing %s: %v\n", *out, err)
			os.Exit(1)
		}
	}
}

// quiet sends go-log (go-ds-crdt, bitswap, libp2p) to stderr at error level.
func quiet() {
	cfg := logging.GetConfig()
	cfg.Stderr, cfg.Stdout, cfg.File, cfg.URL = true, false, "", ""
	cfg.Level = logging.LevelError
	logging.SetupLogging(cfg)
}
