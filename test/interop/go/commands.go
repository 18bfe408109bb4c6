package main

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"
	"time"

	dshelp "github.com/ipfs/boxo/datastore/dshelp"
	"github.com/ipfs/boxo/ipld/merkledag"
	cid "github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	"github.com/ipfs/go-ds-crdt/pb"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"
)

// command is the union of every command's fields.
type command struct {
	Cmd         string    `json:"cmd"`
	Addr        string    `json:"addr"`
	Key         string    `json:"key"`
	Value       *string   `json:"value"`
	DagName     string    `json:"dagName"`
	Ops         []batchOp `json:"ops"`
	Prefix      string    `json:"prefix"`
	Count       int       `json:"count"`
	BatchSize   int       `json:"batchSize"`
	ValuePrefix *string   `json:"valuePrefix"`
	Absent      bool      `json:"absent"`
	TimeoutMs   int       `json:"timeoutMs"`
	Cid         string    `json:"cid"`
}

type batchOp struct {
	Op    string `json:"op"`
	Key   string `json:"key"`
	Value string `json:"value"`
}

type headInfo struct {
	Cid     string `json:"cid"`
	Height  uint64 `json:"height"`
	DagName string `json:"dagName"`
}

const (
	pollInterval     = 20 * time.Millisecond
	defaultTimeout   = 30 * time.Second
	connectTimeout   = 15 * time.Second
	operationTimeout = 120 * time.Second
)

// go-ds-crdt v0.6.8 has a single DAG per datastore: no named DAGs and no
// PurgeDAG (both only exist on go-ds-crdt's unreleased master branch).
var errNoNamedDAGs = errors.New("named DAGs (dagName) are not supported by go-ds-crdt v0.6.8")

func errResp(err error) map[string]any {
	return map[string]any{"ok": false, "error": err.Error()}
}

func okResp(kv ...any) map[string]any {
	m := map[string]any{"ok": true}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1]
	}
	return m
}

// handleLine parses and runs one command. quit is true for "quit".
func (r *replica) handleLine(ctx context.Context, line []byte) (resp map[string]any, quit bool) {
	var c command
	if err := json.Unmarshal(line, &c); err != nil {
		return errResp(fmt.Errorf("bad command line: %w", err)), false
	}
	if c.Cmd == "quit" {
		return okResp(), true
	}
	defer func() {
		if p := recover(); p != nil {
			resp = errResp(fmt.Errorf("panic in %q: %v", c.Cmd, p))
		}
	}()
	resp, err := r.run(ctx, &c)
	if err != nil {
		return errResp(err), false
	}
	return resp, false
}

func (r *replica) run(ctx context.Context, c *command) (map[string]any, error) {
	switch c.Cmd {
	case "connect":
		return r.cmdConnect(ctx, c)
	case "peers":
		return r.cmdPeers()
	case "topicPeers":
		return r.cmdTopicPeers()
	case "put":
		return r.cmdPut(ctx, c)
	case "get":
		return r.cmdGet(ctx, c)
	case "delete":
		return r.cmdDelete(ctx, c)
	case "batch":
		return r.cmdBatch(ctx, c)
	case "bulk":
		return r.cmdBulk(ctx, c)
	case "list":
		return r.cmdList(ctx, c)
	case "heads":
		return r.cmdHeads(ctx)
	case "wait":
		return r.cmdWait(ctx, c)
	case "waitCount":
		return r.cmdWaitCount(ctx, c)
	case "purge":
		return nil, errors.New("PurgeDAG is not available in go-ds-crdt v0.6.8")
	case "block":
		return r.cmdBlock(ctx, c)
	case "":
		return nil, errors.New("missing cmd")
	default:
		return nil, fmt.Errorf("unknown cmd %q", c.Cmd)
	}
}

func opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, operationTimeout)
}

func decodeHex(s string) ([]byte, error) {
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("value is not valid hex: %w", err)
	}
	return b, nil
}

func checkDagName(name string) error {
	if name != "" {
		return errNoNamedDAGs
	}
	return nil
}

func requireKey(k string) (ds.Key, error) {
	if k == "" {
		return ds.Key{}, errors.New("missing key")
	}
	return ds.NewKey(k), nil
}

func (r *replica) cmdConnect(ctx context.Context, c *command) (map[string]any, error) {
	if c.Addr == "" {
		return nil, errors.New("missing addr")
	}
	ai, err := peer.AddrInfoFromString(c.Addr)
	if err != nil {
		return nil, fmt.Errorf("bad addr: %w", err)
	}
	cctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	if err := r.host.Connect(cctx, *ai); err != nil {
		return nil, err
	}
	return okResp(), nil
}

func (r *replica) cmdPeers() (map[string]any, error) {
	ps := r.host.Network().Peers()
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.String())
	}
	sort.Strings(out)
	return okResp("peers", out), nil
}

// topicPeers lists the peers gossipsub knows are subscribed to our topic
// (handy for a harness waiting for the mesh before publishing).
func (r *replica) cmdTopicPeers() (map[string]any, error) {
	ps := r.pubsub.ListPeers(r.cfg.topic)
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.String())
	}
	sort.Strings(out)
	return okResp("peers", out), nil
}

func (r *replica) cmdPut(ctx context.Context, c *command) (map[string]any, error) {
	if err := checkDagName(c.DagName); err != nil {
		return nil, err
	}
	k, err := requireKey(c.Key)
	if err != nil {
		return nil, err
	}
	if c.Value == nil {
		return nil, errors.New("missing value")
	}
	v, err := decodeHex(*c.Value)
	if err != nil {
		return nil, err
	}
	octx, cancel := opCtx(ctx)
	defer cancel()
	if err := r.crdt.Put(octx, k, v); err != nil {
		return nil, err
	}
	return okResp(), nil
}

func (r *replica) cmdGet(ctx context.Context, c *command) (map[string]any, error) {
	k, err := requireKey(c.Key)
	if err != nil {
		return nil, err
	}
	v, found, err := r.get(ctx, k)
	if err != nil {
		return nil, err
	}
	if !found {
		return okResp("found", false), nil
	}
	return okResp("found", true, "value", hex.EncodeToString(v)), nil
}

func (r *replica) get(ctx context.Context, k ds.Key) ([]byte, bool, error) {
	v, err := r.crdt.Get(ctx, k)
	if errors.Is(err, ds.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return v, true, nil
}

func (r *replica) cmdDelete(ctx context.Context, c *command) (map[string]any, error) {
	if err := checkDagName(c.DagName); err != nil {
		return nil, err
	}
	k, err := requireKey(c.Key)
	if err != nil {
		return nil, err
	}
	octx, cancel := opCtx(ctx)
	defer cancel()
	if err := r.crdt.Delete(octx, k); err != nil {
		return nil, err
	}
	return okResp(), nil
}

func (r *replica) cmdBatch(ctx context.Context, c *command) (map[string]any, error) {
	if err := checkDagName(c.DagName); err != nil {
		return nil, err
	}
	// Validate everything before touching the (shared) crdt batch delta.
	type op struct {
		del bool
		key ds.Key
		val []byte
	}
	ops := make([]op, 0, len(c.Ops))
	for i, o := range c.Ops {
		k, err := requireKey(o.Key)
		if err != nil {
			return nil, fmt.Errorf("ops[%d]: %w", i, err)
		}
		switch o.Op {
		case "put":
			v, err := decodeHex(o.Value)
			if err != nil {
				return nil, fmt.Errorf("ops[%d]: %w", i, err)
			}
			ops = append(ops, op{key: k, val: v})
		case "delete":
			ops = append(ops, op{del: true, key: k})
		default:
			return nil, fmt.Errorf("ops[%d]: unknown op %q", i, o.Op)
		}
	}
	octx, cancel := opCtx(ctx)
	defer cancel()
	b, err := r.crdt.Batch(octx)
	if err != nil {
		return nil, err
	}
	for _, o := range ops {
		if o.del {
			err = b.Delete(octx, o.key)
		} else {
			err = b.Put(octx, o.key, o.val)
		}
		if err != nil {
			return nil, err
		}
	}
	if err := b.Commit(octx); err != nil {
		return nil, err
	}
	return okResp(), nil
}

func (r *replica) cmdBulk(ctx context.Context, c *command) (map[string]any, error) {
	if err := checkDagName(c.DagName); err != nil {
		return nil, err
	}
	if c.Count < 0 {
		return nil, errors.New("count must be >= 0")
	}
	batchSize := c.BatchSize
	if batchSize <= 0 {
		batchSize = 1
	}
	vp := "v"
	if c.ValuePrefix != nil {
		vp = *c.ValuePrefix
	}
	octx, cancel := opCtx(ctx)
	defer cancel()
	start := time.Now()
	if batchSize == 1 {
		for i := 0; i < c.Count; i++ {
			k := ds.NewKey(fmt.Sprintf("%s%d", c.Prefix, i))
			if err := r.crdt.Put(octx, k, fmt.Appendf(nil, "%s%d", vp, i)); err != nil {
				return nil, fmt.Errorf("put %s: %w", k, err)
			}
		}
	} else {
		for lo := 0; lo < c.Count; lo += batchSize {
			b, err := r.crdt.Batch(octx)
			if err != nil {
				return nil, err
			}
			for i := lo; i < lo+batchSize && i < c.Count; i++ {
				k := ds.NewKey(fmt.Sprintf("%s%d", c.Prefix, i))
				if err := b.Put(octx, k, fmt.Appendf(nil, "%s%d", vp, i)); err != nil {
					return nil, fmt.Errorf("batch put %s: %w", k, err)
				}
			}
			if err := b.Commit(octx); err != nil {
				return nil, err
			}
		}
	}
	return okResp("ms", time.Since(start).Milliseconds()), nil
}

// queryPrefix runs a crdt Query for keys that start with prefix as a plain
// string (like JS interface-datastore). go-datastore's Query.Prefix matches
// whole path segments only ("/a" matches "/a/b" but not "/ab"), so we query
// the enclosing path segment and filter the rest by string prefix.
func (r *replica) queryPrefix(ctx context.Context, prefix string, keysOnly bool) ([]query.Entry, error) {
	qp := "/"
	if prefix != "" {
		p := prefix
		if !strings.HasPrefix(p, "/") {
			p = "/" + p
		}
		if i := strings.LastIndex(p, "/"); i > 0 {
			qp = path.Clean(p[:i])
		}
	}
	res, err := r.crdt.Query(ctx, query.Query{Prefix: qp, KeysOnly: keysOnly})
	if err != nil {
		return nil, err
	}
	defer res.Close()
	var out []query.Entry
	for e := range res.Next() {
		if e.Error != nil {
			return nil, e.Error
		}
		if prefix != "" && !strings.HasPrefix(e.Key, prefix) {
			continue
		}
		out = append(out, e.Entry)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

func (r *replica) cmdList(ctx context.Context, c *command) (map[string]any, error) {
	entries, err := r.queryPrefix(ctx, c.Prefix, false)
	if err != nil {
		return nil, err
	}
	out := make([][2]string, 0, len(entries))
	for _, e := range entries {
		out = append(out, [2]string{e.Key, hex.EncodeToString(e.Value)})
	}
	return okResp("entries", out), nil
}

func (r *replica) cmdHeads(ctx context.Context) (map[string]any, error) {
	st := r.crdt.InternalStats(ctx)
	heads := make([]headInfo, 0, len(st.Heads))
	for _, h := range st.Heads {
		height, err := r.headHeight(ctx, h)
		if err != nil {
			return nil, fmt.Errorf("height of head %s: %w", h, err)
		}
		heads = append(heads, headInfo{Cid: h.String(), Height: height, DagName: ""})
	}
	sort.Slice(heads, func(i, j int) bool { return heads[i].Cid < heads[j].Cid })
	return okResp("heads", heads, "maxHeight", st.MaxHeight), nil
}

// headHeight reads the height go-ds-crdt stores for a head
// (<namespace>/h/<multihash key> = uvarint height). If the head was replaced
// in the meantime it falls back to the delta priority in the block itself.
func (r *replica) headHeight(ctx context.Context, c cid.Cid) (uint64, error) {
	k := r.namespace.ChildString("h").Child(dshelp.MultihashToDsKey(c.Hash()))
	b, err := r.store.Get(ctx, k)
	if err == nil {
		if h, n := binary.Uvarint(b); n > 0 {
			return h, nil
		}
	}
	blk, err := r.bstore.Get(ctx, c)
	if err != nil {
		return 0, err
	}
	nd, err := merkledag.DecodeProtobuf(blk.RawData())
	if err != nil {
		return 0, err
	}
	var delta pb.Delta
	if err := proto.Unmarshal(nd.Data(), &delta); err != nil {
		return 0, err
	}
	return delta.GetPriority(), nil
}

func timeoutOf(c *command) time.Duration {
	if c.TimeoutMs > 0 {
		return time.Duration(c.TimeoutMs) * time.Millisecond
	}
	return defaultTimeout
}

// poll calls check every pollInterval until it returns true or the timeout
// expires.
func poll(ctx context.Context, timeout time.Duration, check func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := check()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("timeout")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pollInterval):
		}
	}
}

func (r *replica) cmdWait(ctx context.Context, c *command) (map[string]any, error) {
	k, err := requireKey(c.Key)
	if err != nil {
		return nil, err
	}
	var want []byte
	if c.Value != nil {
		if want, err = decodeHex(*c.Value); err != nil {
			return nil, err
		}
	}
	err = poll(ctx, timeoutOf(c), func() (bool, error) {
		v, found, err := r.get(ctx, k)
		if err != nil {
			return false, err
		}
		switch {
		case c.Absent:
			return !found, nil
		case want != nil:
			return found && string(v) == string(want), nil
		default:
			return found, nil
		}
	})
	if err != nil {
		return nil, err
	}
	return okResp(), nil
}

func (r *replica) cmdWaitCount(ctx context.Context, c *command) (map[string]any, error) {
	n := 0
	err := poll(ctx, timeoutOf(c), func() (bool, error) {
		entries, err := r.queryPrefix(ctx, c.Prefix, true)
		if err != nil {
			return false, err
		}
		n = len(entries)
		return n == c.Count, nil
	})
	if err != nil {
		if err.Error() == "timeout" {
			return map[string]any{"ok": false, "error": "timeout", "count": n}, nil
		}
		return nil, err
	}
	return okResp("count", n), nil
}

func (r *replica) cmdBlock(ctx context.Context, c *command) (map[string]any, error) {
	id, err := cid.Decode(c.Cid)
	if err != nil {
		return nil, fmt.Errorf("bad cid: %w", err)
	}
	blk, err := r.bstore.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	return okResp("hex", hex.EncodeToString(blk.RawData())), nil
}
