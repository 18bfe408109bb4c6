/**
 * `onAbort` (src/on-abort.ts): callbacks on a signal's abort behind one
 * listener of the signal's own, taken back without a trace.
 */

import { getEventListeners } from 'node:events'
import { expect } from 'aegir/chai'
import { onAbort } from '../src/on-abort.js'

describe('onAbort', () => {
  it('runs every callback still waiting, once, oldest first, through one listener on the signal', () => {
    const controller = new AbortController()
    const ran: number[] = []
    const offs = [0, 1, 2, 3, 4].map(i => onAbort(controller.signal, () => { ran.push(i) }))
    expect(getEventListeners(controller.signal, 'abort')).to.have.length(1)
    offs[1]()
    offs[3]()
    controller.abort()
    expect(ran).to.deep.equal([0, 2, 4])
    // taking one back after it ran changes nothing
    offs[0]()
    controller.abort()
    expect(ran).to.deep.equal([0, 2, 4])
  })

  it('runs a callback at once on a signal aborted already', () => {
    let ran = 0
    const off = onAbort(AbortSignal.abort(), () => { ran++ })
    expect(ran).to.equal(1)
    off()
    expect(ran).to.equal(1)
  })

  it('under a churn of callbacks coming and going in any order, runs exactly those still waiting', () => {
    const controller = new AbortController()
    const ran = new Set<number>()
    const live = new Map<number, () => void>()
    // a churn of 2,000 callbacks, some taken back out of order
    for (let i = 0; i < 2000; i++) {
      live.set(i, onAbort(controller.signal, () => { ran.add(i) }))
      if (i % 3 === 2) {
        const victim = [...live.keys()][Math.floor(live.size / 2)]
        live.get(victim)?.()
        live.delete(victim)
      }
    }
    controller.abort()
    expect([...ran].sort((a, b) => a - b)).to.deep.equal([...live.keys()].sort((a, b) => a - b))
  })

  it('a callback taking back another that waits on the same signal: both run once at most, the rest still run', () => {
    const controller = new AbortController()
    const ran: string[] = []
    let offB = (): void => {}
    onAbort(controller.signal, () => { ran.push('a'); offB() })
    offB = onAbort(controller.signal, () => { ran.push('b') })
    onAbort(controller.signal, () => { ran.push('c') })
    controller.abort()
    expect(ran.filter(r => r === 'a')).to.have.length(1)
    expect(ran.filter(r => r === 'b').length).to.be.at.most(1)
    expect(ran).to.include('c')
  })
})
