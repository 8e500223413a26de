/* A hand-written CPU loop of Algorithm 1's Sinkhorn sweeps, the "C loop" of issue 6, for
 * benchmarks/bench_c_loop.py (built by it with gcc; not part of jaxdsm).
 *
 * Per trial, with the whole n x n kernel and its transpose in L1 for all K sweeps:
 *   K = exp(-(d - min d) / T)   where `stabilized` is 0 (the scaling form), or
 *   one log-domain sweep, then K~ = exp(-d/T + f + g)   where it is 1 (jaxdsm's stabilized
 *   form without its absorption rerun: never needed on Exp 1's grid, BENCHMARKS.md);
 *   then sweeps u = 1 / (K v), v = 1 / (K^T u), K of them in all.
 * With `stop_on_repeat`, a trial stops once v equals the v of two sweeps earlier (every
 * later state then repeats with period two, so the result is that of all K sweeps when
 * the remaining count is even; the loop checks after each sweep and finishes the parity).
 * Writes M = diag(u) K diag(v) and the sweeps run per trial. Trials are split over
 * OpenMP threads.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define W_N 64 /* Exp 1's n: a compile-time size lets gcc keep the sums in registers */

static void scaled_products(const float *columns, const float *x, float *out, int n) {
  /* out_i = 1 / sum_j K_ij x_j, with K's columns stored as the rows of ``columns``: a sum
   * of columns scaled by x_j, so every multiply-add fills a vector lane and no horizontal
   * sums are needed. Each out_i is one running sum over j, as in a column sum: accurate
   * enough at n = 64 (the check in bench_c_loop.py), less so at n in the hundreds. */
  if (n == W_N) {
    float sums[W_N] = {0};
    for (int j = 0; j < W_N; j++) {
      const float *column = columns + (size_t)j * W_N;
      float xj = x[j];
      for (int i = 0; i < W_N; i++) sums[i] += column[i] * xj;
    }
    for (int i = 0; i < W_N; i++) out[i] = 1 / sums[i];
    return;
  }
  for (int i = 0; i < n; i++) out[i] = 0;
  for (int j = 0; j < n; j++) {
    const float *column = columns + (size_t)j * n;
    float xj = x[j];
    for (int i = 0; i < n; i++) out[i] += column[i] * xj;
  }
  for (int i = 0; i < n; i++) out[i] = 1 / out[i];
}

static float log_sum_exp(const float *x, int count, int stride) {
  float top = -INFINITY, sum = 0;
  for (int k = 0; k < count; k++) top = fmaxf(top, x[(size_t)k * stride]);
  for (int k = 0; k < count; k++) sum += expf(x[(size_t)k * stride] - top);
  return top + logf(sum);
}

static void make_kernel(const float *cost, float temperature, int stabilized, int n,
                        float *kernel, float *scratch) {
  size_t nn = (size_t)n * n;
  float low = cost[0];
  for (size_t k = 1; k < nn; k++) low = fminf(low, cost[k]);
  float scale = -1 / temperature;
  if (!stabilized) {
    for (size_t k = 0; k < nn; k++) kernel[k] = expf((cost[k] - low) * scale);
    return;
  }
  /* scratch: -d/T, then -d/T + f_i; one row step and one column step in the log domain */
  for (size_t k = 0; k < nn; k++) scratch[k] = cost[k] * scale;
  for (int i = 0; i < n; i++) {
    float f = -log_sum_exp(scratch + (size_t)i * n, n, 1);
    for (int j = 0; j < n; j++) scratch[(size_t)i * n + j] += f;
  }
  for (int j = 0; j < n; j++) {
    float g = -log_sum_exp(scratch + j, n, n);
    for (int i = 0; i < n; i++) kernel[(size_t)i * n + j] = expf(scratch[(size_t)i * n + j] + g);
  }
}

void sinkhorn_loop(const float *costs, int trials, int n, float temperature, int sweeps,
                   int stabilized, int stop_on_repeat, float *matrices, int *sweeps_run) {
#pragma omp parallel
  {
    size_t nn = (size_t)n * n;
    float *kernel = malloc(nn * sizeof(float)), *transposed = malloc(nn * sizeof(float));
    float *scratch = malloc(nn * sizeof(float));
    float *u = malloc(n * sizeof(float)), *v = malloc(n * sizeof(float));
    float *one_back = malloc(n * sizeof(float)), *two_back = malloc(n * sizeof(float));
#pragma omp for schedule(static)
    for (int t = 0; t < trials; t++) {
      make_kernel(costs + t * nn, temperature, stabilized, n, kernel, scratch);
      for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) transposed[(size_t)j * n + i] = kernel[(size_t)i * n + j];
      for (int j = 0; j < n; j++) u[j] = v[j] = one_back[j] = two_back[j] = 1;
      int done = stabilized ? 1 : 0; /* the log-domain sweep counts as the first */
      while (done < sweeps) {
        scaled_products(transposed, v, u, n); /* u = 1 / (K v): K's columns are K^T's rows */
        scaled_products(kernel, u, v, n);     /* v = 1 / (K^T u) */
        done++;
        if (stop_on_repeat && (sweeps - done) % 2 == 0 && done >= 3 &&
            memcmp(v, two_back, n * sizeof(float)) == 0)
          break;
        memcpy(two_back, one_back, n * sizeof(float));
        memcpy(one_back, v, n * sizeof(float));
      }
      sweeps_run[t] = done;
      float *m = matrices + t * nn;
      for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) m[(size_t)i * n + j] = u[i] * kernel[(size_t)i * n + j] * v[j];
    }
    free(kernel); free(transposed); free(scratch); free(u); free(v); free(one_back); free(two_back);
  }
}

#ifdef _OPENMP
#include <omp.h>
void set_threads(int count) { omp_set_num_threads(count); }
#else
void set_threads(int count) { (void)count; }
#endif
