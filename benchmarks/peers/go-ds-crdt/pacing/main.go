// Command pacing shows what bounds go-ds-crdt's walk of a chain: two
// go-libp2p hosts on 127.0.0.1 with boxo bitswap (as in the benchmark),
// and B fetching 200 small blocks from A one after the other in one
// bitswap session, as go-ds-crdt's DAG walk does. It prints the time per
// block next to libp2p's measured latency between the hosts: boxo's
// client sends a peer at most one message per 20 ms (minSendMessageDelay
// in client/internal/messagequeue), so a block costs ~20 ms however short
// the round trip.
//
//	cd benchmarks/peers/go-ds-crdt && go run ./pacing
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/ipfs/boxo/bitswap"
	bsnet "github.com/ipfs/boxo/bitswap/network/bsnet"
	"github.com/ipfs/boxo/blockservice"
	blockstore "github.com/ipfs/boxo/blockstore"
	blocks "github.com/ipfs/go-block-format"
	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
)

const count = 200

type side struct {
	host  host.Host
	bs    blockstore.Blockstore
	bswap *bitswap.Bitswap
	serv  blockservice.BlockService
}

func newSide(ctx context.Context) (*side, error) {
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay(), libp2p.ForceReachabilityPrivate())
	if err != nil {
		return nil, err
	}
	s := &side{host: h, bs: blockstore.NewBlockstore(dssync.MutexWrap(ds.NewMapDatastore()))}
	s.bswap = bitswap.New(ctx, bsnet.NewFromIpfsHost(h), nil, s.bs)
	s.serv = blockservice.New(s.bs, s.bswap)
	return s, nil
}

func (s *side) close() {
	_ = s.bswap.Close()
	_ = s.host.Close()
}

func run() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a, err := newSide(ctx)
	if err != nil {
		return err
	}
	defer a.close()
	b, err := newSide(ctx)
	if err != nil {
		return err
	}
	defer b.close()

	blks := make([]blocks.Block, count)
	for i := range blks {
		blks[i] = blocks.NewBlock([]byte(fmt.Sprintf("block %d", i)))
		if err := a.bs.Put(ctx, blks[i]); err != nil {
			return err
		}
	}
	if err := b.host.Connect(ctx, peer.AddrInfo{ID: a.host.ID(), Addrs: a.host.Addrs()}); err != nil {
		return err
	}
	time.Sleep(500 * time.Millisecond) // let identify finish

	session := blockservice.NewSession(ctx, b.serv)
	t0 := time.Now()
	for _, blk := range blks {
		if _, err := session.GetBlock(ctx, blk.Cid()); err != nil {
			return err
		}
	}
	d := time.Since(t0)
	fmt.Printf("%d blocks fetched one after the other: %.1f ms per block (%.0f blocks/s); libp2p latency B→A %s\n",
		count, float64(d.Microseconds())/1000/count, count/d.Seconds(), b.host.Peerstore().LatencyEWMA(a.host.ID()))
	return nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "pacing: %v\n", err)
		os.Exit(1)
	}
}
