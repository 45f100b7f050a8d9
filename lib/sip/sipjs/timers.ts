/**
 * RFC 3261's T1 (the round-trip estimate, 500 ms by default) sets every retransmission interval and
 * every 64xT1 give-up timer (B, F, H, L, M, N). sip.js keeps them in one module-wide object, read
 * when a timer starts, so an agent sets them once from its configuration when its backend starts:
 * the setting is per process, as an agent is.
 */
import { Core } from "sip.js";

type MutableTimers = { -readonly [K in keyof typeof Core.Timers]: number };

export function useT1(t1Ms: number): void {
  const timers = Core.Timers as MutableTimers;
  timers.T1 = t1Ms;
  for (const k of ["TIMER_B", "TIMER_F", "TIMER_H", "TIMER_L", "TIMER_M", "TIMER_N"] as const) timers[k] = 64 * t1Ms;
}
