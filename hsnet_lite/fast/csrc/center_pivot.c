/* Center-pivot 4D convolution (HSNet, supplementary Eq. 8) for CPU inference in fp32, fused.
 *
 * out(i, j, p, q) = bias + sum_{a,b} Kq(a, b) x(i + a - kq0/2, j + b - kq1/2, pivot(p, q))   (Eq. 7)
 *                        + sum_{a,b} Ks(a, b) x(i, j, p*sh - ph + a, q*sw - pw + b)          (Eq. 6)
 * with pivot(p, q) = (p*sh - ph + ks0/2, q*sw - pw + ks1/2), zero outside the input.
 *
 * The input is the channels-last 6D tensor (B, Ha, Wa, Hb, Wb, C) the learner keeps, the output
 * (B, Ha, Wa, P, Q, O), O a multiple of 16: each output position's 16 channels are one vector
 * register, accumulated with one fused multiply-add per input value and kernel tap.
 *
 * Each thread takes a band of query columns j0..j1 and walks down the query rows i. For row i it
 * runs Eq. 6 on each support map x(i, j) (read once, from start to end; or, for maps with few
 * outputs, on the same output of up to 11 maps at once) into a scratch of the
 * last kq0/2 + 1 rows, and copies the map's pivots into a ring of the last kq0 rows; then it runs
 * Eq. 7 for row i - kq0/2 from that ring, adds the scratch, and writes the sum to the output
 * (past the caches when the output is larger than they are). The input is read once, the query
 * branch reads the pivots packed together instead of strided across the tensor, and each output
 * is written once.
 *
 * Written with GCC's vector extension (no intrinsics), threads with OpenMP. Built and loaded
 * by hsnet_lite/fast/native.py; checked against PyTorch's convolutions by tests/test_native.py. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#if defined(__AVX512F__) || defined(__AVX__)
#include <immintrin.h>
#endif

typedef float v16 __attribute__((vector_size(64)));
typedef float v16u __attribute__((vector_size(64), aligned(4)));
#define LOADV(p) (*(const v16u *)(p))
#define STOREV(p, v) (*(v16u *)(p) = (v))

#define TMAX 11       /* outputs per register tile: more runs out of general registers on x86-64 */
#define MAXTAPS 121   /* kernel taps per tile: up to 11 x 11 */
#define BAND_MAX 25   /* widest band of query columns per work item */
#define STREAM_BYTES (8L << 20)  /* outputs larger than this are stored past the caches */
#define ACROSS_BELOW 7  /* support outputs per row below which tiles run across maps */

typedef struct {
  const float *x;      /* (B, Ha, Wa, Hb, Wb, C) */
  const float *wq;     /* query kernel, (kq0, kq1, C, O) */
  const float *ws;     /* support kernel, (ks0, ks1, C, O) */
  const float *bias;   /* (O), both convs' biases summed, or NULL */
  float *out;          /* (B, Ha, Wa, P, Q, O) */
  int B, Ha, Wa, Hb, Wb, C, O, P, Q;
  int kq0, kq1, ks0, ks1;
  int sh, sw, ph, pw;  /* support stride and padding */
  int threads;
} hl_cp_args;

int hl_abi_version(void) { return 1; }

/* acc[t] += sum over taps n and channels c of w[woff[n] + c*O] * base[off[n] + t*tstride + c] */
#define TILE(T)                                                                                      \
  static inline __attribute__((always_inline)) void tile##T(v16 *acc, const float *base,           \
      const long *off, const float *w, const long *woff, int ntaps, int C, int O, long tstride) {  \
    v16 a[T];                                                                                        \
    for (int t = 0; t < T; t++) a[t] = acc[t];                                                      \
    for (int n = 0; n < ntaps; n++) {                                                                \
      const float *xp = base + off[n], *wp = w + woff[n];                                           \
      for (int c = 0; c < C; c++) {                                                                  \
        v16 wv = LOADV(wp + (long)c * O);                                                            \
        for (int t = 0; t < T; t++) a[t] += wv * xp[t * tstride + c];                               \
      }                                                                                              \
    }                                                                                                \
    for (int t = 0; t < T; t++) acc[t] = a[t];                                                      \
  }
TILE(1) TILE(2) TILE(3) TILE(4) TILE(5) TILE(6) TILE(7) TILE(8) TILE(9) TILE(10) TILE(11)
#define TCASE(T) case T: tile##T(acc, base, off, w, woff, n, C, O, ts); break;
static void tile(int T, v16 *acc, const float *base, const long *off, const float *w, const long *woff,
                 int n, int C, int O, long ts) {
  switch (T) { TCASE(1) TCASE(2) TCASE(3) TCASE(4) TCASE(5) TCASE(6) TCASE(7) TCASE(8) TCASE(9) TCASE(10)
               default: tile11(acc, base, off, w, woff, n, C, O, ts); }
}

/* the first of the equal tiles of at most TMAX that n outputs split into */
static inline int balanced(int n) { int k = (n + TMAX - 1) / TMAX; return (n + k - 1) / k; }

/* kernel taps [k0, k1) of output pos along one axis (stride s, padding pad) that fall inside 0..n-1 */
static inline void valid_taps(int pos, int s, int pad, int k, int n, int *k0, int *k1) {
  int lo = pad - pos * s, hi = n + pad - pos * s;
  *k0 = lo > 0 ? lo : 0;
  *k1 = hi < k ? hi : k;
}

/* ---- Eq. 6: the support conv on one map, as a plan of register tiles shared by every map ---- */

typedef struct { int T, n; long out, ostride, tstride; long off[MAXTAPS], woff[MAXTAPS]; } block_t;
typedef struct { int n; block_t *b; } plan_t;

static void add_block(const hl_cp_args *a, plan_t *pl, int p, int q, int T, int along_q) {
  block_t *b = &pl->b[pl->n++];
  const int C = a->C, O = a->O;
  int r0, r1, c0, c1;
  valid_taps(p, a->sh, a->ph, a->ks0, a->Hb, &r0, &r1);
  valid_taps(q, a->sw, a->pw, a->ks1, a->Wb, &c0, &c1);
  b->T = T; b->n = 0;
  b->out = ((long)p * a->Q + q) * O;
  b->ostride = along_q ? O : (long)a->Q * O;
  b->tstride = along_q ? (long)a->sw * C : (long)a->sh * a->Wb * C;
  for (int ka = r0; ka < r1; ka++)
    for (int kb = c0; kb < c1; kb++) {
      b->off[b->n] = ((long)(p * a->sh - a->ph + ka) * a->Wb + (q * a->sw - a->pw + kb)) * C;
      b->woff[b->n++] = (long)(ka * a->ks1 + kb) * C * O;
    }
}

static void add_run(const hl_cp_args *a, plan_t *pl, int p, int q, int n, int along_q) {
  for (int u = 0, T; u < n; u += T) {
    T = balanced(n - u);
    add_block(a, pl, along_q ? p : p + u, along_q ? q + u : q, T, along_q);
  }
}

static int full_taps(int pos, int s, int pad, int k, int n) { int k0, k1; valid_taps(pos, s, pad, k, n, &k0, &k1); return k1 - k0 == k; }

/* rows of outputs as tiles along q where every column tap is inside the map; the edge columns as
   tiles along p where every row tap is; the corners one output at a time */
static int make_plan(const hl_cp_args *a, plan_t *pl) {
  int plo = 0, phi = a->P, qlo = 0, qhi = a->Q;
  while (plo < a->P && !full_taps(plo, a->sh, a->ph, a->ks0, a->Hb)) plo++;
  while (phi > plo && !full_taps(phi - 1, a->sh, a->ph, a->ks0, a->Hb)) phi--;
  while (qlo < a->Q && !full_taps(qlo, a->sw, a->pw, a->ks1, a->Wb)) qlo++;
  while (qhi > qlo && !full_taps(qhi - 1, a->sw, a->pw, a->ks1, a->Wb)) qhi--;
  pl->n = 0;
  pl->b = malloc(sizeof(block_t) * ((size_t)a->P * a->Q + 1));
  if (!pl->b) return -1;
  for (int p = 0; p < a->P; p++) {
    if (qhi > qlo) add_run(a, pl, p, qlo, qhi - qlo, 1);
    if (p >= plo && p < phi) continue;
    for (int q = 0; q < qlo; q++) add_block(a, pl, p, q, 1, 1);
    for (int q = qhi; q < a->Q; q++) add_block(a, pl, p, q, 1, 1);
  }
  if (phi > plo) {
    for (int q = 0; q < qlo; q++) add_run(a, pl, plo, q, phi - plo, 0);
    for (int q = qhi; q < a->Q; q++) add_run(a, pl, plo, q, phi - plo, 0);
  }
  return 0;
}

/* one block per output, for support_row_across */
static int make_single_plan(const hl_cp_args *a, plan_t *pl) {
  pl->n = 0;
  pl->b = malloc(sizeof(block_t) * ((size_t)a->P * a->Q));
  if (!pl->b) return -1;
  for (int p = 0; p < a->P; p++)
    for (int q = 0; q < a->Q; q++) add_block(a, pl, p, q, 1, 1);
  return 0;
}

/* tiles across maps when a row of a map has fewer than ACROSS_BELOW outputs */
static inline int across_maps(const hl_cp_args *a) { return a->Q < ACROSS_BELOW; }

/* out(p, q) = bias + Eq. 6 at every (p, q) of one support map */
static void support_map(const hl_cp_args *a, const plan_t *pl, const float *map, float *omap) {
  v16 acc[TMAX];
  for (int ob = 0; ob < a->O; ob += 16) {
    const v16 bv = a->bias ? LOADV(a->bias + ob) : (v16){0};
    for (int k = 0; k < pl->n; k++) {
      const block_t *b = &pl->b[k];
      for (int t = 0; t < b->T; t++) acc[t] = bv;
      tile(b->T, acc, map, b->off, a->ws + ob, b->woff, b->n, a->C, a->O, b->tstride);
      float *op = omap + b->out + ob;
      for (int t = 0; t < b->T; t++) STOREV(op + t * b->ostride, acc[t]);
    }
  }
}

/* ---- one work item: the query columns j0..j1 of one batch element, every query row ---- */

typedef struct {
  const hl_cp_args *a;
  int b, j0, j1, h0, h1;  /* columns computed, and the columns whose pivots Eq. 7 reads */
  float *ring;            /* pivots (P, Q, C) of the maps (i, h0..h1) of the last kq0 rows i */
  long rowlen;
  float *partial;         /* Eq. 6, (P, Q, O), of the maps (i, j0..j1) of the last kq0/2 + 1 rows i */
  int stream;             /* store the output past the caches */
} item_t;

static inline const float *map_at(const hl_cp_args *a, int b, int i, int j) {
  return a->x + (((long)b * a->Ha + i) * a->Wa + j) * ((long)a->Hb * a->Wb * a->C);
}
static inline float *out_at(const hl_cp_args *a, int b, int i, int j) {
  return a->out + (((long)b * a->Ha + i) * a->Wa + j) * ((long)a->P * a->Q * a->O);
}
static inline long ring_at(const item_t *it, int i, int j) {
  return (long)(i % it->a->kq0) * it->rowlen + (long)(j - it->h0) * it->a->P * it->a->Q * it->a->C;
}

/* the pivots of map (i, j), packed as (P, Q, C) into the ring */
static void gather(const item_t *it, int i, int j) {
  const hl_cp_args *a = it->a;
  const int C = a->C;
  const float *map = map_at(a, it->b, i, j);
  float *dst = it->ring + ring_at(it, i, j);
  for (int p = 0; p < a->P; p++) {
    const float *row = map + ((long)(p * a->sh - a->ph + a->ks0 / 2) * a->Wb + (a->ks1 / 2 - a->pw)) * C;
    for (int q = 0; q < a->Q; q++)
      for (int c = 0; c < C; c++) *dst++ = row[(long)q * a->sw * C + c];
  }
}

static inline float *partial_at(const item_t *it, int i, int j) {
  const hl_cp_args *a = it->a;
  return it->partial + ((long)(i % (a->kq0 / 2 + 1)) * (it->j1 - it->j0) + (j - it->j0)) * ((long)a->P * a->Q * a->O);
}

/* 16 output channels to memory, past the caches when asked (dst then 64-byte aligned) */
static inline void store16(float *dst, v16 v, int stream) {
#if defined(__AVX512F__)
  if (stream) { _mm512_stream_ps(dst, (__m512)v); return; }
#elif defined(__AVX__)
  if (stream) {
    _mm256_stream_ps(dst, _mm256_loadu_ps((const float *)&v));
    _mm256_stream_ps(dst + 8, _mm256_loadu_ps((const float *)&v + 8));
    return;
  }
#endif
  (void)stream;
  STOREV(dst, v);
}

/* Eq. 6 for row i, each output (p, q) of up to TMAX consecutive maps j as one register tile (pl:
   one block per output): for support maps with few outputs per row, whose tiles along q would be
   too short to keep the multiply-add units busy */
static void support_row_across(const item_t *it, const plan_t *pl, int i) {
  const hl_cp_args *a = it->a;
  const long HWC = (long)a->Hb * a->Wb * a->C, PQO = (long)a->P * a->Q * a->O;
  v16 acc[TMAX];
  const float *maps = map_at(a, it->b, i, it->j0);
  float *parts = partial_at(it, i, it->j0);
  for (int k = 0; k < pl->n; k++) {
    const block_t *b = &pl->b[k];
    for (int ob = 0; ob < a->O; ob += 16) {
      const v16 bv = a->bias ? LOADV(a->bias + ob) : (v16){0};
      for (int j = 0, T; j < it->j1 - it->j0; j += T) {
        T = balanced(it->j1 - it->j0 - j);
        for (int t = 0; t < T; t++) acc[t] = bv;
        tile(T, acc, maps + j * HWC, b->off, a->ws + ob, b->woff, b->n, a->C, a->O, HWC);
        for (int t = 0; t < T; t++) STOREV(parts + (j + t) * PQO + b->out + ob, acc[t]);
      }
    }
  }
  for (int j = it->h0; j < it->h1; j++) gather(it, i, j);
}

/* Eq. 6 for row i, map by map along the plan's tiles */
static void support_row(const item_t *it, const plan_t *pl, int i) {
  if (across_maps(it->a)) {
    support_row_across(it, pl, i);
    return;
  }
  for (int j = it->j0; j < it->j1; j++) {
    support_map(it->a, pl, map_at(it->a, it->b, i, j), partial_at(it, i, j));
    gather(it, i, j);
  }
  for (int j = it->h0; j < it->j0; j++) gather(it, i, j);
  for (int j = it->j1; j < it->h1; j++) gather(it, i, j);
}

/* out(iq, j, p, q) += Eq. 7 for the columns of the item, from the pivots in the ring */
static void query_row(const item_t *it, int iq) {
  const hl_cp_args *a = it->a;
  const int C = a->C, O = a->O, PQ = a->P * a->Q;
  long off[MAXTAPS], woff[MAXTAPS];
  v16 acc[TMAX];
  for (int j = it->j0; j < it->j1; j++) {
    int n = 0;
    for (int ka = 0; ka < a->kq0; ka++) {
      const int ii = iq + ka - a->kq0 / 2;
      if (ii < 0 || ii >= a->Ha) continue;
      for (int kb = 0; kb < a->kq1; kb++) {
        const int jj = j + kb - a->kq1 / 2;
        if (jj < 0 || jj >= a->Wa) continue;
        off[n] = ring_at(it, ii, jj);
        woff[n++] = (long)(ka * a->kq1 + kb) * C * O;
      }
    }
    float *omap = out_at(a, it->b, iq, j);
    const float *smap = partial_at(it, iq, j);
    for (int ob = 0; ob < O; ob += 16)
      for (int u = 0, T; u < PQ; u += T) {  /* pivots u = p*Q + q, packed C apart */
        T = balanced(PQ - u);
        const long at = (long)u * O + ob;
        for (int t = 0; t < T; t++) acc[t] = LOADV(smap + at + (long)t * O);
        tile(T, acc, it->ring + (long)u * C, off, a->wq + ob, woff, n, C, O, C);
        for (int t = 0; t < T; t++) store16(omap + at + (long)t * O, acc[t], it->stream);
      }
  }
}

/* 0 on success; -1 for arguments the kernel does not take, -2 when memory runs out */
int hl_center_pivot_forward(const hl_cp_args *a) {
  if (a->O % 16 || a->C < 1 || a->kq0 % 2 == 0 || a->kq1 % 2 == 0 || a->kq0 * a->kq1 > MAXTAPS ||
      a->ks0 * a->ks1 > MAXTAPS || a->sh < 1 || a->sw < 1 || a->P < 1 || a->Q < 1 || a->threads < 1)
    return -1;
  /* every pivot must lie inside the map */
  if (a->ks0 / 2 - a->ph < 0 || (a->P - 1) * a->sh - a->ph + a->ks0 / 2 >= a->Hb ||
      a->ks1 / 2 - a->pw < 0 || (a->Q - 1) * a->sw - a->pw + a->ks1 / 2 >= a->Wb)
    return -1;
  plan_t pl;
  if (across_maps(a) ? make_single_plan(a, &pl) : make_plan(a, &pl)) return -2;
  int bands = a->threads;
  while ((a->Wa + bands - 1) / bands > BAND_MAX && bands < a->Wa) bands += a->threads;
  const int width = (a->Wa + bands - 1) / bands;
  bands = (a->Wa + width - 1) / width;
  const int items = a->B * bands, halo = a->kq1 / 2, lag = a->kq0 / 2;
  const long rowlen = (long)(width + 2 * halo) * a->P * a->Q * a->C;
  const size_t ring_bytes = sizeof(float) * (size_t)a->kq0 * rowlen;
  const size_t partial_bytes = sizeof(float) * (size_t)(lag + 1) * width * a->P * a->Q * a->O;
  const size_t out_bytes = sizeof(float) * (size_t)a->B * a->Ha * a->Wa * a->P * a->Q * a->O;
  const int stream = out_bytes > STREAM_BYTES && (uintptr_t)a->out % 64 == 0;
  int failed = 0;
#pragma omp parallel num_threads(a->threads)
  {
    static __thread float *ring = NULL, *partial = NULL;  /* kept per thread between calls */
    static __thread size_t ring_cap = 0, partial_cap = 0;
    if (ring_cap < ring_bytes) {
      free(ring);
      ring = malloc(ring_bytes);
      ring_cap = ring ? ring_bytes : 0;
    }
    if (partial_cap < partial_bytes) {
      free(partial);
      partial = malloc(partial_bytes);
      partial_cap = partial ? partial_bytes : 0;
    }
    if (!ring || !partial) {
#pragma omp atomic write
      failed = 1;
    }
#pragma omp barrier
    if (!failed) {
#pragma omp for schedule(dynamic, 1)
      for (int w = 0; w < items; w++) {
        const int b = w / bands, j0 = (w % bands) * width;
        const int j1 = j0 + width < a->Wa ? j0 + width : a->Wa;
        item_t it = {a, b, j0, j1, j0 - halo < 0 ? 0 : j0 - halo, j1 + halo > a->Wa ? a->Wa : j1 + halo, ring, rowlen,
                     partial, stream};
        for (int i = 0; i < a->Ha + lag; i++) {
          if (i < a->Ha) support_row(&it, &pl, i);
          if (i >= lag) query_row(&it, i - lag);
        }
      }
    }
  }
  free(pl.b);
#if defined(__AVX512F__) || defined(__AVX__)
  if (stream) _mm_sfence();  /* the streamed stores are visible before the caller reads them */
#endif
  return failed ? -2 : 0;
}
