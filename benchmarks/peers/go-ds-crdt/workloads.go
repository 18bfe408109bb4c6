// The workloads, the same as datastore-crdt's benchmarks (batched-writes,
// unbatched-puts, replication, deep-catch-up, listing) at the same sizes;
// -quick scales them down the same way. Keys are /bench/k%08d, values 100
// random bytes made before the clock starts. Local workloads run on
// offline replicas; replication runs A (this process) → B (child process)
// over libp2p TCP on 127.0.0.1.
//
// Baselines: raw go-ds-leveldb (the datastore go-ds-crdt runs on here,
// default options: every write synced), and for batched writes also
// goleveldb without sync (what datastore-level does) in the note.
package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	leveldb "github.com/ipfs/go-ds-leveldb"
	goleveldb "github.com/syndtr/goleveldb/leveldb"
)

const (
	valueSize = 100
	batchSize = 1000
	mb        = 1024 * 1024
)

func keyName(i int) ds.Key { return ds.RawKey(fmt.Sprintf("/bench/k%08d", i)) }

func makeKeys(n, offset int) []ds.Key {
	keys := make([]ds.Key, n)
	for i := range keys {
		keys[i] = keyName(offset + i)
	}
	return keys
}

func makeValues(n int) [][]byte {
	pool := make([]byte, n*valueSize)
	_, _ = rand.Read(pool)
	values := make([][]byte, n)
	for i := range values {
		values[i] = pool[i*valueSize : (i+1)*valueSize : (i+1)*valueSize]
	}
	return values
}

func rate(n int, d time.Duration) float64 { return float64(n) / d.Seconds() }

// tempDir makes a fresh directory; the caller removes it.
func tempDir(label string) (string, error) {
	return os.MkdirTemp("", "datastore-crdt-bench-go-"+label+"-")
}

// withTemp runs fn on a fresh temp dir and removes it after.
func withTemp(label string, fn func(dir string) error) error {
	dir, err := tempDir(label)
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	return fn(dir)
}

// withOffline runs fn on an offline go-ds-crdt replica in a fresh temp dir.
func withOffline(label string, fn func(n *node) error) error {
	return withTemp(label, func(dir string) error {
		n, err := openNode(nodeInit{dir: dir})
		if err != nil {
			return err
		}
		err = fn(n)
		if cerr := n.close(); err == nil {
			err = cerr
		}
		return err
	})
}

func writeBatches(ctx context.Context, store ds.Batching, keys []ds.Key, values [][]byte) error {
	for i := 0; i < len(keys); i += batchSize {
		b, err := store.Batch(ctx)
		if err != nil {
			return err
		}
		for j := i; j < min(len(keys), i+batchSize); j++ {
			if err := b.Put(ctx, keys[j], values[j]); err != nil {
				return err
			}
		}
		if err := b.Commit(ctx); err != nil {
			return err
		}
	}
	return nil
}

// rawBatches times batches of batchSize on a raw go-ds-leveldb store.
func rawBatches(ctx context.Context, keys []ds.Key, values [][]byte) (d time.Duration, err error) {
	err = withTemp("raw", func(dir string) error {
		store, err := leveldb.NewDatastore(dir, nil)
		if err != nil {
			return err
		}
		defer store.Close()
		t0 := time.Now()
		err = writeBatches(ctx, store, keys, values)
		d = time.Since(t0)
		return err
	})
	return d, err
}

// nosyncBatches times the same batches on goleveldb itself, writes not
// synced: what datastore-level (classic-level) does by default.
func nosyncBatches(keys []ds.Key, values [][]byte) (d time.Duration, err error) {
	err = withTemp("nosync", func(dir string) error {
		db, err := goleveldb.OpenFile(dir, nil)
		if err != nil {
			return err
		}
		defer db.Close()
		t0 := time.Now()
		for i := 0; i < len(keys); i += batchSize {
			b := new(goleveldb.Batch)
			for j := i; j < min(len(keys), i+batchSize); j++ {
				b.Put(keys[j].Bytes(), values[j])
			}
			if err := db.Write(b, nil); err != nil {
				return err
			}
		}
		d = time.Since(t0)
		return nil
	})
	return d, err
}

func batchedWrites(quick bool) ([]result, error) {
	ctx := context.Background()
	count, rounds := 100_000, 2
	if quick {
		count, rounds = 10_000, 1
	}
	keys, values := makeKeys(count, 0), makeValues(count)
	var bestRaw, bestCrdt, bestNosync float64
	for r := 0; r < rounds; r++ {
		d, err := rawBatches(ctx, keys, values)
		if err != nil {
			return nil, fmt.Errorf("raw go-ds-leveldb: %w", err)
		}
		bestRaw = max(bestRaw, rate(count, d))
		if d, err = nosyncBatches(keys, values); err != nil {
			return nil, fmt.Errorf("raw goleveldb: %w", err)
		}
		bestNosync = max(bestNosync, rate(count, d))

		err = withOffline("batch", func(n *node) error {
			t0 := time.Now()
			if err := writeBatches(ctx, n.crdt, keys, values); err != nil {
				return err
			}
			bestCrdt = max(bestCrdt, rate(count, time.Since(t0)))
			// sanity: the last key is readable
			_, err := n.crdt.Get(ctx, keys[count-1])
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	return []result{{
		Name: "batched writes (1,000/batch)", Value: num(bestCrdt), Unit: "keys/s",
		Baseline: num(bestRaw), Ratio: num(bestCrdt / bestRaw),
		Note: fmt.Sprintf("%d keys x 100 B, best of %d, offline replica; baseline = raw go-ds-leveldb batches (synced, its default); goleveldb without sync: %.0f keys/s", count, rounds, bestNosync),
	}}, nil
}

func unbatchedPuts(quick bool) ([]result, error) {
	ctx := context.Background()
	count, networked := 10_000, 3_000
	if quick {
		count, networked = 1_000, 1_000
	}
	keys, values := makeKeys(count, 0), makeValues(count)
	var offline, online, raw float64
	// the fsync bound: single puts on raw go-ds-leveldb (each one synced)
	err := withTemp("raw-puts", func(dir string) error {
		store, err := leveldb.NewDatastore(dir, nil)
		if err != nil {
			return err
		}
		defer store.Close()
		t0 := time.Now()
		for i := 0; i < min(count, 1_000); i++ {
			if err := store.Put(ctx, keys[i], values[i]); err != nil {
				return err
			}
		}
		raw = rate(min(count, 1_000), time.Since(t0))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("raw go-ds-leveldb: %w", err)
	}
	err = withOffline("puts", func(n *node) error {
		t0 := time.Now()
		for i := range keys {
			if err := n.crdt.Put(ctx, keys[i], values[i]); err != nil {
				return err
			}
		}
		offline = rate(count, time.Since(t0))
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = withTemp("puts-net", func(dir string) error {
		n, err := openNode(nodeInit{dir: dir, topic: fmt.Sprintf("bench-go-puts-%d", os.Getpid())})
		if err != nil {
			return err
		}
		defer n.close()
		t0 := time.Now()
		for i := 0; i < networked; i++ {
			if err := n.crdt.Put(ctx, keys[i], values[i]); err != nil {
				return err
			}
		}
		online = rate(networked, time.Since(t0))
		return nil
	})
	if err != nil {
		return nil, err
	}
	return []result{
		{Name: "unbatched puts", Value: num(offline), Unit: "puts/s", Note: fmt.Sprintf("%d puts, one DAG node each; offline replica on go-ds-leveldb; raw go-ds-leveldb Put() (synced): %.0f puts/s", count, raw)},
		{Name: "unbatched puts, libp2p replica", Value: num(online), Unit: "puts/s", Note: fmt.Sprintf("%d puts; bitswap + gossipsub replica, each put announced, no peer connected", networked)},
	}, nil
}

type replicated struct {
	done    childDone
	ms      float64
	writeMs float64
}

// replicate writes count keys on A (batches, or single puts when single)
// while a fresh B listens; the clock runs from A's first write until B
// holds every key.
func replicate(label string, count int, single bool, timeout time.Duration) (out replicated, err error) {
	ctx := context.Background()
	topic := fmt.Sprintf("bench-go-%s-%d", label, os.Getpid())
	keys, values := makeKeys(count, 0), makeValues(count)
	err = withTemp(label+"-a", func(aDir string) error {
		a, err := openNode(nodeInit{dir: aDir, topic: topic})
		if err != nil {
			return err
		}
		defer a.close()
		addr, err := a.addr()
		if err != nil {
			return err
		}
		return withTemp(label+"-b", func(bDir string) error {
			b, err := forkChild(childStart{Dir: bDir, Topic: topic, Dial: addr, Expected: count, TimeoutMs: int(timeout.Milliseconds()), WaitForGo: true})
			if err != nil {
				return err
			}
			defer b.close()
			if err := b.next("ready", 30*time.Second, nil); err != nil {
				return err
			}
			wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			if waitUntil(wctx, 20*time.Millisecond, func() bool { return a.topicPeers(topic) > 0 }) != nil {
				return fmt.Errorf("timed out waiting for B to subscribe")
			}
			if err := b.send(map[string]string{"cmd": "go"}); err != nil {
				return err
			}
			t0 := time.Now()
			if single {
				for i := range keys {
					if err := a.crdt.Put(ctx, keys[i], values[i]); err != nil {
						return err
					}
				}
			} else if err := writeBatches(ctx, a.crdt, keys, values); err != nil {
				return err
			}
			out.writeMs = msSince(t0)
			if err := b.next("done", timeout+30*time.Second, &out.done); err != nil {
				return err
			}
			// B's clock: from 'go' until its hook counted every key
			out.ms = out.done.Ms
			return nil
		})
	})
	return out, err
}

func rssRow(name string, d childDone, note string) result {
	if d.HWM == 0 {
		return result{Name: name, Unit: "MB", Error: "VmHWM not readable"}
	}
	return result{Name: name, Value: num(float64(d.HWM) / mb), Unit: "MB", Note: fmt.Sprintf("%s; VmHWM of B's process; at the end the Go runtime held %d MB from the OS, %d MB of it heap", note, d.Sys/mb, d.HeapSys/mb)}
}

func replication(quick bool) ([]result, error) {
	count, singles := 100_000, 1_000
	timeout, singleTimeout := 300*time.Second, 180*time.Second
	if quick {
		count, singles = 10_000, 200
		timeout, singleTimeout = 120*time.Second, 60*time.Second
	}
	var out []result
	r, err := replicate("repl", count, false, timeout)
	switch {
	case err != nil:
		out = append(out, result{Name: "replication A→B (TCP)", Unit: "keys/s", Error: err.Error()}, result{Name: "peak RSS, replicating B", Unit: "MB", Error: err.Error()})
	case r.done.Error != "":
		out = append(out, result{Name: "replication A→B (TCP)", Unit: "keys/s", Error: r.done.Error}, rssRow("peak RSS, replicating B", r.done, fmt.Sprintf("%d batched keys", count)))
	default:
		out = append(out,
			result{Name: "replication A→B (TCP)", Value: num(float64(count) / (r.ms / 1000)), Unit: "keys/s", Note: fmt.Sprintf("%d keys in %d batches; A wrote them in %.1f s; %.1f s end to end", count, count/batchSize, r.writeMs/1000, r.ms/1000)},
			rssRow("peak RSS, replicating B", r.done, fmt.Sprintf("%d batched keys", count)))
	}

	r, err = replicate("repl1", singles, true, singleTimeout)
	switch {
	case err != nil:
		out = append(out, result{Name: "replication A→B, single puts", Unit: "keys/s", Error: err.Error()}, result{Name: "peak RSS, replicating B (single puts)", Unit: "MB", Error: err.Error()})
	case r.done.Error != "":
		out = append(out, result{Name: "replication A→B, single puts", Unit: "keys/s", Error: r.done.Error}, rssRow("peak RSS, replicating B (single puts)", r.done, fmt.Sprintf("%d single puts", singles)))
	default:
		out = append(out,
			result{Name: "replication A→B, single puts", Value: num(float64(singles) / (r.ms / 1000)), Unit: "keys/s", Note: fmt.Sprintf("%d puts (one DAG node each) on A, %.1f s until B had all; A put at %.0f/s", singles, r.ms/1000, float64(singles)/(r.writeMs/1000))},
			rssRow("peak RSS, replicating B (single puts)", r.done, fmt.Sprintf("%d single puts", singles)))
	}
	return out, nil
}

func deepCatchUp(quick bool) ([]result, error) {
	ctx := context.Background()
	count, timeout := 10_000, 600*time.Second
	if quick {
		count, timeout = 1_000, 120*time.Second
	}
	topic := fmt.Sprintf("bench-go-catch-up-%d", os.Getpid())
	keys, values := makeKeys(count, 0), makeValues(count)
	var out []result
	err := withTemp("catchup-a", func(aDir string) error {
		a, err := openNode(nodeInit{dir: aDir, topic: topic})
		if err != nil {
			return err
		}
		defer a.close()
		addr, err := a.addr()
		if err != nil {
			return err
		}
		t0 := time.Now()
		for i := range keys {
			if err := a.crdt.Put(ctx, keys[i], values[i]); err != nil {
				return err
			}
		}
		note := fmt.Sprintf("%d nodes, one key each (A put them at %.0f/s)", count, rate(count, time.Since(t0)))
		return withTemp("catchup-b", func(bDir string) error {
			b, err := forkChild(childStart{Dir: bDir, Topic: topic, Dial: addr, Expected: count, TimeoutMs: int(timeout.Milliseconds())})
			if err != nil {
				return err
			}
			defer b.close()
			var d childDone
			if err := b.next("done", timeout+30*time.Second, &d); err != nil {
				return err
			}
			rss := rssRow("peak RSS, catching-up B", d, fmt.Sprintf("%d nodes", count))
			if d.Error != "" {
				out = []result{{Name: "deep catch-up", Unit: "s", Error: d.Error, Note: note}, {Name: "deep catch-up rate", Unit: "keys/s", Error: d.Error}, rss}
				return nil
			}
			out = []result{
				{Name: "deep catch-up", Value: num(d.Ms / 1000), Unit: "s", Note: note + "; from B's dial to all keys on B"},
				{Name: "deep catch-up rate", Value: num(float64(count) / (d.Ms / 1000)), Unit: "keys/s", Note: "one DAG node per key"},
				rss,
			}
			return nil
		})
	})
	return out, err
}

// timeQuery reads every key and value; checks the count and the bytes.
func timeQuery(ctx context.Context, store ds.Read, expected int) (float64, error) {
	t0 := time.Now()
	res, err := store.Query(ctx, query.Query{})
	if err != nil {
		return 0, err
	}
	n, bytes := 0, 0
	for r := range res.Next() {
		if r.Error != nil {
			res.Close()
			return 0, r.Error
		}
		n++
		bytes += len(r.Value)
	}
	d := time.Since(t0)
	res.Close()
	if n != expected || bytes != expected*valueSize {
		return 0, fmt.Errorf("query returned %d entries (%d value bytes), expected %d", n, bytes, expected)
	}
	return rate(n, d), nil
}

func listing(quick bool) ([]result, error) {
	ctx := context.Background()
	count, chunk := 1_000_000, 100_000
	if quick {
		count = 100_000
	}
	var out []result
	err := withTemp("raw-list", func(rawDir string) error {
		raw, err := leveldb.NewDatastore(filepath.Join(rawDir, "raw"), nil)
		if err != nil {
			return err
		}
		defer raw.Close()
		return withOffline("list", func(n *node) error {
			t0 := time.Now()
			// load in chunks so only one chunk's keys and values are in memory at a time
			for i := 0; i < count; i += chunk {
				keys, values := makeKeys(min(chunk, count-i), i), makeValues(min(chunk, count-i))
				if err := writeBatches(ctx, raw, keys, values); err != nil {
					return err
				}
				if err := writeBatches(ctx, n.crdt, keys, values); err != nil {
					return err
				}
			}
			load := time.Since(t0)
			var bestRaw, bestCrdt float64
			for r := 0; r < 2; r++ {
				v, err := timeQuery(ctx, raw, count)
				if err != nil {
					return fmt.Errorf("raw: %w", err)
				}
				bestRaw = max(bestRaw, v)
				if v, err = timeQuery(ctx, n.crdt, count); err != nil {
					return err
				}
				bestCrdt = max(bestCrdt, v)
			}
			out = []result{{
				Name: "listing: query() keys+values", Value: num(bestCrdt), Unit: "keys/s",
				Baseline: num(bestRaw), Ratio: num(bestCrdt / bestRaw),
				Note: fmt.Sprintf("%d keys, best of 2; baseline = raw go-ds-leveldb Query(); loading both took %.0f s", count, load.Seconds()),
			}}
			return nil
		})
	})
	return out, err
}
