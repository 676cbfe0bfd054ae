/**
 * The deny-rate statistic of `deny-spike` rules: an exponentially weighted mean and variance of an
 * edge's per-bucket deny rate, and the z-score of a new bucket against them (West's incremental
 * EWMA variance). A bucket is scored against the history before it, then folded in.
 */
export interface Ewma {
  mean: number;
  variance: number;
  /** Buckets folded in so far. */
  samples: number;
}

export function newEwma(): Ewma {
  // A destination's deny rate is expected to be 0 until traffic says otherwise.
  return { mean: 0, variance: 0, samples: 0 };
}

/** How many standard deviations `x` lies above the mean (the deviation floored at `minStdDev`). */
export function zScore(e: Ewma, x: number, minStdDev: number): number {
  return (x - e.mean) / Math.max(Math.sqrt(e.variance), minStdDev);
}

/** Folds one observation in with smoothing factor `alpha`. */
export function update(e: Ewma, x: number, alpha: number): void {
  const diff = x - e.mean;
  const incr = alpha * diff;
  e.mean += incr;
  e.variance = (1 - alpha) * (e.variance + diff * incr);
  e.samples++;
}
