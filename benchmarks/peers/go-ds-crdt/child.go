// The syncing replica B, run as a child process of the benchmark (this
// same binary, subcommand "replica") so that its peak RSS is its own, and
// the parent's handle on it. Protocol: one JSON object per line.
//
//	parent → child stdin:  {"cmd":"start",...childStart}, {"cmd":"go"}, {"cmd":"exit"}
//	child stdout → parent: {"type":"ready"}, {"type":"done",...childDone}
//
// The clock starts at "go" (when waitForGo) or just before dialling; it
// stops when go-ds-crdt's PutHook has seen `expected` keys, confirmed by
// counting the keys with a query. EOF on stdin is "exit". Every wait is
// bounded by timeoutMs.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"sync/atomic"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
)

type childStart struct {
	Cmd       string `json:"cmd"`
	Dir       string `json:"dir"`
	Topic     string `json:"topic"`
	Dial      string `json:"dial"`
	Expected  int    `json:"expected"`
	TimeoutMs int    `json:"timeoutMs"`
	WaitForGo bool   `json:"waitForGo"`
}

type childDone struct {
	Type  string  `json:"type"`
	Count int64   `json:"count"`
	Ms    float64 `json:"ms"`
	// HWM is the kernel's peak RSS of the child (VmHWM), in bytes
	HWM uint64 `json:"hwm"`
	// HeapSys and Sys are Go runtime figures at the end, in bytes
	HeapSys uint64 `json:"heapSys"`
	Sys     uint64 `json:"sys"`
	Error   string `json:"error,omitempty"`
}

// runChild is the "replica" subcommand.
func runChild() error {
	in := bufio.NewReader(os.Stdin)
	out := json.NewEncoder(os.Stdout)
	cmds := make(chan string, 4)
	go func() {
		defer close(cmds)
		for {
			line, err := in.ReadBytes('\n')
			if len(line) > 0 {
				var m struct{ Cmd string }
				if json.Unmarshal(line, &m) == nil {
					if m.Cmd == "start" {
						cmds <- string(line)
					} else {
						cmds <- m.Cmd
					}
				}
			}
			if err != nil {
				return
			}
		}
	}()

	first, ok := <-cmds
	if !ok {
		return errors.New("no start command")
	}
	var start childStart
	if err := json.Unmarshal([]byte(first), &start); err != nil || start.Cmd != "start" {
		return fmt.Errorf("bad start command: %q", first)
	}

	done := childDone{Type: "done"}
	n, err := syncReplica(start, cmds, &done)
	if err != nil {
		done.Error = err.Error()
	}
	done.HWM = peakRSS()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	done.HeapSys, done.Sys = m.HeapSys, m.Sys
	_ = out.Encode(done)

	// wait for "exit" (or EOF), then close
	for c := range cmds {
		if c == "exit" {
			break
		}
	}
	if n != nil {
		return n.close()
	}
	return nil
}

func syncReplica(start childStart, cmds <-chan string, done *childDone) (*node, error) {
	var count atomic.Int64
	reached := make(chan struct{})
	expected := int64(start.Expected)
	n, err := openNode(nodeInit{dir: start.Dir, topic: start.Topic, putHook: func(ds.Key, []byte) {
		if count.Add(1) == expected {
			close(reached)
		}
	}})
	if err != nil {
		return nil, err
	}

	t0 := time.Now()
	deadline := t0.Add(time.Duration(start.TimeoutMs) * time.Millisecond)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	if err := n.dial(ctx, start.Dial); err != nil {
		return n, fmt.Errorf("dialling A: %w", err)
	}
	if err := waitUntil(ctx, 20*time.Millisecond, func() bool { return n.topicPeers(start.Topic) > 0 }); err != nil {
		return n, errors.New("timed out waiting for the gossipsub subscription")
	}
	if err := json.NewEncoder(os.Stdout).Encode(map[string]string{"type": "ready"}); err != nil {
		return n, err
	}
	if start.WaitForGo {
		select {
		case c := <-cmds:
			if c != "go" {
				return n, fmt.Errorf("expected go, got %q", c)
			}
		case <-ctx.Done():
			return n, errors.New("timed out waiting for go")
		}
		t0 = time.Now()
	}

	defer func() { done.Count = count.Load() }()
	select {
	case <-reached:
	case <-ctx.Done():
		done.Ms = msSince(t0)
		return n, fmt.Errorf("timed out after %d ms with %d of %d keys", start.TimeoutMs, count.Load(), expected)
	}
	// the hook says every key is there: the clock stops here, then the
	// store itself confirms it (off the clock, as the JS child does)
	done.Ms = msSince(t0)
	err = waitUntil(ctx, 200*time.Millisecond, func() bool {
		c, err := countKeys(ctx, n)
		return err == nil && c >= int(expected)
	})
	if err != nil {
		return n, errors.New("timed out waiting for the store to list every key")
	}
	return n, nil
}

func countKeys(ctx context.Context, n *node) (int, error) {
	res, err := n.crdt.Query(ctx, query.Query{KeysOnly: true})
	if err != nil {
		return 0, err
	}
	defer res.Close()
	c := 0
	for r := range res.Next() {
		if r.Error != nil {
			return c, r.Error
		}
		c++
	}
	return c, nil
}

// waitUntil polls ok every interval until it holds or ctx ends.
func waitUntil(ctx context.Context, interval time.Duration, ok func() bool) error {
	for !ok() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
	return nil
}

func msSince(t time.Time) float64 { return float64(time.Since(t).Microseconds()) / 1000 }

// child is the parent's handle on a running B.
type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan []byte
}

// forkChild starts B (this binary, "replica") and sends it start.
func forkChild(start childStart) (*child, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	start.Cmd = "start"
	c := &child{cmd: exec.Command(self, "replica"), lines: make(chan []byte, 4)}
	c.cmd.Stderr = os.Stderr
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := c.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		defer close(c.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.lines <- append([]byte(nil), sc.Bytes()...)
		}
	}()
	return c, c.send(start)
}

func (c *child) send(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = c.stdin.Write(append(b, '\n'))
	return err
}

// next waits (at most timeout) for B's next line of the given type.
func (c *child) next(typ string, timeout time.Duration, into any) error {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case line, ok := <-c.lines:
			if !ok {
				return fmt.Errorf("replica process exited before %q", typ)
			}
			var m struct{ Type string }
			if json.Unmarshal(line, &m) != nil {
				continue
			}
			if m.Type == "done" && typ != "done" {
				var d childDone
				_ = json.Unmarshal(line, &d)
				return fmt.Errorf("replica failed before %q: %s", typ, d.Error)
			}
			if m.Type == typ {
				if into != nil {
					return json.Unmarshal(line, into)
				}
				return nil
			}
		case <-timer.C:
			return fmt.Errorf("timed out after %s waiting for the replica's %q", timeout, typ)
		}
	}
}

// close asks B to exit and kills it if it has not within 15 s.
func (c *child) close() {
	_ = c.send(map[string]string{"cmd": "exit"})
	_ = c.stdin.Close()
	exited := make(chan struct{})
	go func() { _ = c.cmd.Wait(); close(exited) }()
	select {
	case <-exited:
	case <-time.After(15 * time.Second):
		_ = c.cmd.Process.Kill()
		<-exited
	}
}
