/* Random geometries of the fused center-pivot kernel against a float64 loop.
 * Run by scripts/center_pivot_fuzz.sh under AddressSanitizer and UBSan (not part of the test suite:
 * tests/test_native.py checks the kernel through Python). Exits 1 on any disagreement. */
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include "center_pivot.c"  /* compiled with -I hsnet_lite/fast/csrc */
static float rnd(unsigned *s) { *s = *s * 1664525u + 1013904223u; return ((*s >> 8) & 0xffff) / 65536.0f - 0.5f; }
int main(void) {
  unsigned seed = 1; int bad = 0, ran = 0;
  for (int trial = 0; trial < 360; trial++) {
    int B = 1 + rand() % 2, Ha = 1 + rand() % 9, Wa = 1 + rand() % 30, Hb = 1 + rand() % 14, Wb = 1 + rand() % 14;
    int wide = trial % 6 == 5;  /* every sixth trial: many channels and outputs */
    int C = 1 + rand() % (wide ? 70 : 7), O = 16 * (1 + rand() % (wide ? 8 : 2));
    int kq0 = 1 + 2 * (rand() % 3), kq1 = 1 + 2 * (rand() % 3), ks0 = 1 + 2 * (rand() % 3), ks1 = 1 + 2 * (rand() % 3);
    int sh = 1 + rand() % 4, sw = 1 + rand() % 4, ph = rand() % 2 ? ks0 / 2 : 0, pw = rand() % 2 ? ks1 / 2 : 0;
    int P = (Hb + 2 * ph - ks0) / sh + 1, Q = (Wb + 2 * pw - ks1) / sw + 1;
    if (Hb + 2 * ph < ks0 || Wb + 2 * pw < ks1 || P < 1 || Q < 1) continue;
    size_t nx = (size_t)B * Ha * Wa * Hb * Wb * C, no = (size_t)B * Ha * Wa * P * Q * O;
    float *x = malloc(nx * 4), *wq = malloc(kq0 * kq1 * C * O * 4), *ws = malloc(ks0 * ks1 * C * O * 4), *bias = malloc(O * 4);
    float *out = malloc(no * 4), *ref = malloc(no * 4);
    for (size_t i = 0; i < nx; i++) x[i] = rnd(&seed);
    for (int i = 0; i < kq0 * kq1 * C * O; i++) wq[i] = rnd(&seed);
    for (int i = 0; i < ks0 * ks1 * C * O; i++) ws[i] = rnd(&seed);
    for (int i = 0; i < O; i++) bias[i] = rnd(&seed);
    hl_cp_args a = {x, wq, ws, bias, out, B, Ha, Wa, Hb, Wb, C, O, P, Q, kq0, kq1, ks0, ks1, sh, sw, ph, pw, 1 + rand() % 3};
    int code = hl_center_pivot_forward(&a);
    int pivot_ok = ks0 / 2 - ph >= 0 && (P - 1) * sh - ph + ks0 / 2 < Hb && ks1 / 2 - pw >= 0 && (Q - 1) * sw - pw + ks1 / 2 < Wb;
    if (!pivot_ok) { if (code != -1) { printf("trial %d: expected rejection\n", trial); bad++; } goto next; }
    if (code) { printf("trial %d: code %d\n", trial, code); bad++; goto next; }
    #define X(b,i,j,r,c,ch) x[((((((size_t)(b) * Ha + (i)) * Wa + (j)) * Hb + (r)) * Wb + (c)) * C + (ch))]
    for (int b = 0; b < B; b++) for (int i = 0; i < Ha; i++) for (int j = 0; j < Wa; j++) for (int p = 0; p < P; p++) for (int q = 0; q < Q; q++) for (int o = 0; o < O; o++) {
      double s = bias[o];
      int pr = p * sh - ph + ks0 / 2, pc = q * sw - pw + ks1 / 2;
      for (int ka = 0; ka < kq0; ka++) for (int kb = 0; kb < kq1; kb++) { int ii = i + ka - kq0 / 2, jj = j + kb - kq1 / 2; if (ii < 0 || ii >= Ha || jj < 0 || jj >= Wa) continue;
        for (int c = 0; c < C; c++) s += (double)wq[((ka * kq1 + kb) * C + c) * O + o] * X(b, ii, jj, pr, pc, c); }
      for (int ka = 0; ka < ks0; ka++) for (int kb = 0; kb < ks1; kb++) { int r = p * sh - ph + ka, cc = q * sw - pw + kb; if (r < 0 || r >= Hb || cc < 0 || cc >= Wb) continue;
        for (int c = 0; c < C; c++) s += (double)ws[((ka * ks1 + kb) * C + c) * O + o] * X(b, i, j, r, cc, c); }
      ref[(((((size_t)b * Ha + i) * Wa + j) * P + p) * Q + q) * O + o] = (float)s;
    }
    ran++; double md = 0; for (size_t k = 0; k < no; k++) { double d = fabs(out[k] - ref[k]); if (d > md) md = d; }
    if (md > 1e-4) { printf("trial %d: max diff %g (B%d Ha%d Wa%d Hb%d Wb%d C%d O%d kq%dx%d ks%dx%d s%dx%d p%dx%d)\n", trial, md, B, Ha, Wa, Hb, Wb, C, O, kq0, kq1, ks0, ks1, sh, sw, ph, pw); bad++; }
  next:
    free(x); free(wq); free(ws); free(bias); free(out); free(ref);
  }
  printf("%s (%d bad, %d compared)\n", bad ? "FAIL" : "all trials agree", bad, ran);
  return bad != 0;
}
