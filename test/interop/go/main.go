// Command go-crdt-replica runs a single go-ds-crdt replica (libp2p host,
// gossipsub broadcaster, bitswap DAG syncer) and is driven over stdin/stdout
// with a JSON line protocol. It exists so the TypeScript test-suite can prove
// wire compatibility between go-ds-crdt and datastore-crdt replicas.
//
// stdout carries protocol lines only; all logging goes to stderr.
// See README.md for the protocol.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"sort"
	"syscall"
	"time"
)

type config struct {
	listen      string
	keyFile     string
	topic       string
	dataDir     string
	namespace   string
	rebroadcast time.Duration
	logLevel    string
}

func main() {
	var cfg config
	flag.StringVar(&cfg.listen, "listen", "/ip4/127.0.0.1/tcp/0", "libp2p listen multiaddr (must be 127.0.0.1 TCP)")
	flag.StringVar(&cfg.keyFile, "key", "", "file holding a libp2p-marshalled private key (created with a new ed25519 key if missing); random ed25519 identity when empty")
	flag.StringVar(&cfg.topic, "topic", "datastore-crdt-interop", "gossipsub topic for head broadcasts")
	flag.StringVar(&cfg.dataDir, "data", "", "directory for an on-disk (leveldb) datastore; in-memory when empty")
	flag.StringVar(&cfg.namespace, "namespace", "/crdt", "go-ds-crdt namespace inside the datastore")
	flag.DurationVar(&cfg.rebroadcast, "rebroadcast", 2*time.Second, "go-ds-crdt RebroadcastInterval")
	flag.StringVar(&cfg.logLevel, "loglevel", "error", "log level for all subsystems (debug, info, warn, error); logs go to stderr")
	flag.Parse()

	if err := setupLogging(cfg.logLevel); err != nil {
		fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	r, err := newReplica(ctx, cfg)
	if err != nil {
		fatal(err)
	}

	out := newOutput(os.Stdout)
	out.write(map[string]any{
		"event":  "ready",
		"peerId": r.host.ID().String(),
		"addrs":  r.p2pAddrs(),
	})

	// Treat SIGINT/SIGTERM like "quit" so the harness can always stop us
	// cleanly.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sigs
		_ = r.Close()
		os.Exit(0)
	}()

	in := bufio.NewReader(os.Stdin)
	for {
		line, err := in.ReadBytes('\n')
		if len(line) > 0 && !isBlank(line) {
			resp, quit := r.handleLine(ctx, line)
			if quit {
				closeErr := r.Close()
				if closeErr != nil {
					out.write(errResp(closeErr))
					os.Exit(1)
				}
				out.write(resp)
				os.Exit(0)
			}
			out.write(resp)
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				fmt.Fprintf(os.Stderr, "go-crdt-replica: reading stdin: %v\n", err)
			}
			// EOF (or a broken stdin) behaves like "quit".
			closeErr := r.Close()
			if closeErr != nil {
				out.write(errResp(closeErr))
				os.Exit(1)
			}
			out.write(map[string]any{"ok": true})
			os.Exit(0)
		}
	}
}

func isBlank(b []byte) bool {
	for _, c := range b {
		if c != ' ' && c != '\t' && c != '\r' && c != '\n' {
			return false
		}
	}
	return true
}

func fatal(err error) {
	fmt.Fprintf(os.Stderr, "go-crdt-replica: %v\n", err)
	os.Exit(1)
}

// output serialises one JSON object per line on stdout.
type output struct {
	w *bufio.Writer
}

func newOutput(w io.Writer) *output { return &output{w: bufio.NewWriter(w)} }

func (o *output) write(v map[string]any) {
	b, err := marshalOrdered(v)
	if err != nil {
		b, _ = marshalOrdered(errResp(fmt.Errorf("encoding response: %w", err)))
	}
	_, _ = o.w.Write(b)
	_ = o.w.WriteByte('\n')
	_ = o.w.Flush()
}

// leadingKeys are emitted first, in this order; the remaining keys follow
// sorted by name. Parsers do not care, but it keeps lines easy to read and
// to match with plain string comparisons (e.g. a line starts with
// `{"ok":true`).
var leadingKeys = []string{"event", "ok", "error", "peerId", "addrs"}

func marshalOrdered(m map[string]any) ([]byte, error) {
	keys := make([]string, 0, len(m))
	for _, k := range leadingKeys {
		if _, ok := m[k]; ok {
			keys = append(keys, k)
		}
	}
	rest := make([]string, 0, len(m))
	for k := range m {
		if !slices.Contains(leadingKeys, k) {
			rest = append(rest, k)
		}
	}
	sort.Strings(rest)
	keys = append(keys, rest...)

	var buf bytes.Buffer
	buf.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			buf.WriteByte(',')
		}
		kb, err := json.Marshal(k)
		if err != nil {
			return nil, err
		}
		vb, err := json.Marshal(m[k])
		if err != nil {
			return nil, err
		}
		buf.Write(kb)
		buf.WriteByte(':')
		buf.Write(vb)
	}
	buf.WriteByte('}')
	return buf.Bytes(), nil
}
