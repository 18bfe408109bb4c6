/**
 * The DAG walker: fetches the nodes below a head with `numWorkers` fetches
 * in flight, merges each one through the engine and descends into the
 * children the engine hands back (those not processed and not claimed by
 * another walk). Deeper nodes are taken first, so the queue holds about one
 * DAG level's width rather than the whole DAG.
 *
 * A failed fetch leaves its `w/` record in place (see engine.ts); the walk
 * goes on with its other branches and rejects at the end with the first
 * error, so the caller can mark the store dirty and a repair can resume.
 */

import PQueue from 'p-queue'
import { isMalformed } from './errors.js'
import type { BlockGetter, DAGBlockstore, Engine } from './engine.js'
import type { DecodedNode } from './dag-node.js'
import type { Logger } from '@libp2p/interface'
import type { AbortOptions } from 'interface-store'
import type { CID } from 'multiformats/cid'

/** A place to start walking: a reserved node, fetched already or not */
export interface WalkStart {
  cid: CID
  node?: DecodedNode
}

export interface WalkerInit {
  engine: Engine
  blockstore: DAGBlockstore
  log: Logger
  numWorkers: number
}

export class Walker {
  private readonly engine: Engine
  private readonly blockstore: DAGBlockstore
  private readonly log: Logger
  private readonly queue: PQueue
  /** Nodes fetched and merged by walks since start */
  public fetched = 0

  constructor (init: WalkerInit) {
    this.engine = init.engine
    this.blockstore = init.blockstore
    this.log = init.log
    this.queue = new PQueue({ concurrency: init.numWorkers })
  }

  /** Fetches waiting for a worker or in flight */
  get queued (): number {
    return this.queue.size + this.queue.pending
  }

  /**
   * Walks down from nodes the caller has reserved with `engine.reserve()`.
   * Every reservation taken on the way is released before this settles.
   */
  async walk (starts: WalkStart[], options?: AbortOptions): Promise<void> {
    if (starts.length === 0) return
    // switched to the plain blockstore for the rest of the walk once the session fails
    const via = { getter: await this.getter(starts[0].cid, options) }
    const errors: Error[] = []

    await new Promise<void>(resolve => {
      let outstanding = 0

      const schedule = (cid: CID, depth: number, known?: DecodedNode): void => {
        outstanding++
        this.queue.add(async () => {
          options?.signal?.throwIfAborted()
          const node = known ?? await this.fetch(cid, via, options)
          if (known == null) this.fetched++
          const { children } = await this.engine.processNode(node, options)
          for (const child of children) {
            schedule(child, depth + 1)
          }
        }, { priority: depth })
          .catch(async (err: Error) => {
            if (isMalformed(err)) {
              // no retry can fix a malformed block: skip it for good
              this.log.error('skipping malformed node %c - %e', cid, err)
              await this.engine.dropPending(cid).catch(() => {})
              return
            }
            if (options?.signal?.aborted !== true) {
              this.log.error('could not process node %c - %e', cid, err)
            }
            errors.push(err)
          })
          .finally(() => {
            this.engine.release(cid)
            outstanding--
            if (outstanding === 0) resolve()
          })
      }

      for (const start of starts) {
        schedule(start.cid, 0, start.node)
      }
    })

    if (errors.length > 0) {
      throw errors[0]
    }
  }

  /**
   * Fetches through the walk's session, falling back to the plain blockstore
   * if the session fails. A session that failed once (its providers were
   * gone, or there were none when the walk started) is not used again in
   * that walk: every further fetch through it would wait `dagSyncerTimeout`
   * before falling back.
   */
  private async fetch (cid: CID, via: { getter: BlockGetter }, options?: AbortOptions): Promise<DecodedNode> {
    const getter = via.getter
    try {
      return await this.engine.fetchNode(cid, getter, options)
    } catch (err: any) {
      if (getter === this.blockstore || options?.signal?.aborted === true || err.name !== 'BlockFetchError') throw err
      this.log('session fetch of %c failed, fetching without the session from now on - %e', cid, err)
      via.getter = this.blockstore
      return this.engine.fetchNode(cid, this.blockstore, options)
    }
  }

  private async getter (root: CID, options?: AbortOptions): Promise<BlockGetter> {
    if (this.blockstore.createSession == null) {
      return this.blockstore
    }
    try {
      return await this.blockstore.createSession(root, options)
    } catch (err: any) {
      this.log('no session for %c, fetching without one - %e', root, err)
      return this.blockstore
    }
  }
}
