/* d(t) = Lev(A[:t], B[:t]) for t = 1..max(len A, len B) in one bit-parallel pass.
 *
 * Same algorithm as the pure-Python reference levenshtein_trajectory_py (Myers
 * 1999, Hyyro's edit-distance form): B is the pattern, one bit per row, split
 * into W = ceil(m/64) words; each symbol of A advances one DP column. The
 * carries between words are the only thing the big-integer version gets for
 * free: one for the addition, one each for the HP and HN shifts.
 *
 * The diagonal is read incrementally instead of by masked popcounts. With
 * r = min(j, m), d(j) = D[r][j] and
 *   j <= m:  D[j][j] = D[j-1][j-1] + h(j-1, j) + v(j, j)
 *   j >  m:  D[m][j] = D[m][j-1]   + h(m, j)
 * where h(i, j) = D[i][j] - D[i][j-1] is bit i-1 of the unshifted HP/HN of
 * column j (row 0 is always +1) and v(i, j) = D[i][j] - D[i-1][j] is bit i-1
 * of the new VP/VN. Past the end of A the column stays fixed and the diagonal
 * walks down it: d(t) = d(t-1) + v(t, n) while t <= m.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t u64;

/* Open addressing with Fibonacci hashing, table at least twice the size of B:
 * the slot holding x (sym[slot] == x) or the empty slot (-1) where it belongs. */
static size_t probe(const Py_ssize_t *slot, const int64_t *sym, size_t mask, int shift, int64_t x) {
    size_t h = (size_t)(((u64)x * 0x9E3779B97F4A7C15ull) >> shift);
    while (slot[h] >= 0 && sym[slot[h]] != x) h = (h + 1) & mask;
    return h;
}

/* Items must be Python ints (int subclasses included) that fit in int64: a
 * TypeError or OverflowError lets the Python wrapper fall back to int() or to
 * the reference, so this never has to guess at a conversion. */
static int64_t *to_int64(PyObject *seq_in, Py_ssize_t *len) {
    PyObject *seq = PySequence_Fast(seq_in, "trajectory() arguments must be sequences");
    if (!seq) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    int64_t *v = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(int64_t));
    if (!v) { Py_DECREF(seq); PyErr_NoMemory(); return NULL; }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!PyLong_Check(items[i])) {
            PyErr_SetString(PyExc_TypeError, "trajectory() items must be ints");
            goto fail;
        }
        v[i] = PyLong_AsLongLong(items[i]);
        if (v[i] == -1 && PyErr_Occurred()) goto fail;
    }
    Py_DECREF(seq);
    *len = n;
    return v;
fail:
    PyMem_Free(v);
    Py_DECREF(seq);
    return NULL;
}

/* Fills out[0..T-1] for a = A[f:], b = B[f:] after the common prefix of length f
 * (stripping it leaves every later d(t) unchanged; d(t) = 0 inside it). a[0] != b[0]. */
static int run(const int64_t *a, Py_ssize_t n, const int64_t *b, Py_ssize_t m, int64_t *out) {
    if (m == 0) {  /* D[0][j] = j up to j = n, then A is whole */
        for (Py_ssize_t t = 1; t <= n; t++) out[t - 1] = t;
        return 0;
    }
    const Py_ssize_t W = (m + 63) / 64;
    /* Peq by distinct symbol of B, found by hashing; each symbol's rows are one run
     * pos[start[s]..start[s+1]) (a counting sort). A symbol with >= W rows gets a
     * dense W-word row (at most m/W <= 64 such rows, so O(m) words in all); a rarer
     * one sets its < W bits into a zeroed scratch vector and clears them after the
     * column. Both cost O(W) per column, and memory stays O(m) even when every
     * symbol of B is distinct. */
    int bits = 1;
    while (((size_t)1 << bits) < 2 * (size_t)m) bits++;
    const size_t mask = ((size_t)1 << bits) - 1;
    const int shift = 64 - bits;
    Py_ssize_t *slot = malloc((mask + 1) * sizeof(Py_ssize_t));
    int64_t *sym = malloc((size_t)m * sizeof(int64_t));
    Py_ssize_t *sid = malloc((size_t)m * sizeof(Py_ssize_t)), *pos = malloc((size_t)m * sizeof(Py_ssize_t));
    Py_ssize_t *start = calloc((size_t)m + 1, sizeof(Py_ssize_t));
    Py_ssize_t *dense = malloc((size_t)m * sizeof(Py_ssize_t));  /* row offset, or -1 */
    u64 *vp = malloc((size_t)W * sizeof(u64)), *vn = malloc((size_t)W * sizeof(u64));
    u64 *scratch = calloc((size_t)W, sizeof(u64)), *rows = NULL;
    int rc = -1;
    if (!slot || !sym || !sid || !pos || !start || !dense || !vp || !vn || !scratch) goto done;
    memset(slot, 0xff, (mask + 1) * sizeof(Py_ssize_t));  /* all -1 */
    Py_ssize_t k = 0, ndense = 0;
    for (Py_ssize_t i = 0; i < m; i++) {
        const size_t h = probe(slot, sym, mask, shift, b[i]);
        if (slot[h] < 0) { slot[h] = k; sym[k++] = b[i]; }
        sid[i] = slot[h];
        start[sid[i] + 1]++;
    }
    for (Py_ssize_t s = 0; s < k; s++) {
        start[s + 1] += start[s];
        dense[s] = start[s];  /* fill cursor for now */
    }
    for (Py_ssize_t i = 0; i < m; i++) pos[dense[sid[i]]++] = i;
    for (Py_ssize_t s = 0; s < k; s++) ndense += start[s + 1] - start[s] >= W;
    if (ndense && !(rows = calloc((size_t)(ndense * W), sizeof(u64)))) goto done;
    for (Py_ssize_t s = 0, r = 0; s < k; s++) {
        dense[s] = -1;
        if (start[s + 1] - start[s] < W) continue;
        dense[s] = r * W;
        for (Py_ssize_t i = start[s]; i < start[s + 1]; i++) rows[r * W + pos[i] / 64] |= (u64)1 << (pos[i] % 64);
        r++;
    }
    /* Column 0: D[i][0] = i, every vertical delta +1. Bits above row m are never
     * read, and carries and shifts only move upward, so they need no mask. */
    for (Py_ssize_t w = 0; w < W; w++) { vp[w] = ~(u64)0; vn[w] = 0; }
    int64_t d = 0;
    for (Py_ssize_t j = 1; j <= n; j++) {
        const Py_ssize_t s = slot[probe(slot, sym, mask, shift, a[j - 1])];  /* -1: not in B */
        const u64 *eq = scratch;  /* all zero when a[j-1] does not occur in B */
        if (s >= 0 && dense[s] >= 0) eq = rows + dense[s];
        else if (s >= 0)
            for (Py_ssize_t i = start[s]; i < start[s + 1]; i++)
                scratch[pos[i] / 64] |= (u64)1 << (pos[i] % 64);
        /* Row whose horizontal delta enters d(j): j-1 on the diagonal, m below it. */
        const Py_ssize_t hrow = j <= m ? j - 1 : m;
        const Py_ssize_t hw = hrow ? (hrow - 1) / 64 : -1, hb = hrow ? (hrow - 1) % 64 : 0;
        d += hrow ? 0 : 1;  /* row 0 is D[0][j] = j: horizontal delta +1 */
        /* Row 0's delta +1 is the HP bit shifted into row 1; HN shifts in 0. */
        u64 add_c = 0, hp_c = 1, hn_c = 0;
        for (Py_ssize_t w = 0; w < W; w++) {
            const u64 e = eq[w], p = vp[w], q = vn[w];
            const u64 xv = e | q;
            /* (e & p) + p across words: carry out when either addition wraps. */
            u64 sum = (e & p) + p, c = sum < p;
            sum += add_c;
            c |= sum < add_c;
            add_c = c;
            const u64 xh = (sum ^ p) | e;
            const u64 hp = q | ~(xh | p), hn = p & xh;
            if (w == hw) d += (int64_t)((hp >> hb) & 1) - (int64_t)((hn >> hb) & 1);
            const u64 hps = (hp << 1) | hp_c, hns = (hn << 1) | hn_c;
            hp_c = hp >> 63;
            hn_c = hn >> 63;
            vp[w] = hns | ~(xv | hps);
            vn[w] = hps & xv;
        }
        if (j <= m) {
            const Py_ssize_t vw = (j - 1) / 64, vb = (j - 1) % 64;
            d += (int64_t)((vp[vw] >> vb) & 1) - (int64_t)((vn[vw] >> vb) & 1);
        }
        out[j - 1] = d;
        if (s >= 0 && dense[s] < 0)
            for (Py_ssize_t i = start[s]; i < start[s + 1]; i++) scratch[pos[i] / 64] = 0;
    }
    /* Past the end of A its prefix stays whole: d(t) = Lev(A, B[:min(t, m)]). */
    for (Py_ssize_t t = n + 1; t <= m; t++) {
        const Py_ssize_t vw = (t - 1) / 64, vb = (t - 1) % 64;
        d += (int64_t)((vp[vw] >> vb) & 1) - (int64_t)((vn[vw] >> vb) & 1);
        out[t - 1] = d;
    }
    rc = 0;
done:
    free(slot); free(sym); free(sid); free(pos); free(start); free(dense); free(vp); free(vn); free(scratch); free(rows);
    return rc;
}

static PyObject *trajectory(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *pa, *pb, *res = NULL;
    Py_ssize_t la, lb;
    if (!PyArg_ParseTuple(args, "OO:trajectory", &pa, &pb)) return NULL;
    int64_t *a = to_int64(pa, &la);
    if (!a) return NULL;
    int64_t *b = to_int64(pb, &lb);
    if (!b) { PyMem_Free(a); return NULL; }
    const Py_ssize_t T = la > lb ? la : lb;
    Py_ssize_t f = 0;
    while (f < la && f < lb && a[f] == b[f]) f++;
    res = PyByteArray_FromStringAndSize(NULL, T * (Py_ssize_t)sizeof(int64_t));
    if (res) {
        int64_t *out = (int64_t *)PyByteArray_AS_STRING(res);
        for (Py_ssize_t t = 0; t < f; t++) out[t] = 0;
        if (run(a + f, la - f, b + f, lb - f, out + f) < 0) { Py_CLEAR(res); PyErr_NoMemory(); }
    }
    PyMem_Free(a);
    PyMem_Free(b);
    return res;
}

static PyMethodDef methods[] = {
    {"trajectory", trajectory, METH_VARARGS,
     "trajectory(a, b) -> bytearray of native int64: Lev(a[:t], b[:t]) for t = 1..max(len(a), len(b)).\n"
     "a and b are sequences of Python ints within int64 (TypeError / OverflowError otherwise)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_levtraj", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__levtraj(void) { return PyModule_Create(&module); }
