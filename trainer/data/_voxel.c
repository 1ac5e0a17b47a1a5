/* Fused "map into the BEV frame, then voxelise" for many LiDAR frames at once.
 *
 * The Python side is trainer/data/voxelize.py (FrameVoxelizer), which allocates the outputs and
 * documents the layout. Voxelisation follows spconv's CPU PointToVoxel exactly (tests compare the
 * two): a point's cell is floor((p - lo) / size) in float32 per axis, points outside the grid are
 * dropped, voxels are numbered in order of their first point, a frame keeps at most max_voxels
 * voxels (later points of new cells are dropped, points of existing cells still count) and a voxel
 * keeps its first max_points points. The map is an affine [3, 4] applied in double precision and
 * rounded to float32; columns past xyz are copied.
 *
 * One pass per point: the mapped point goes straight to its voxel slot. A voxel's slots are zeroed
 * when the voxel is created, so an output row is written once and unused output rows are never
 * touched. Cells are found through a small open-addressing hash table per frame (at most half
 * full, so it stays in L2 cache where a dense table of the grid would not), and consecutive points
 * of one cell, common in scan order, skip the lookup.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    float lo[3];     /* grid minimum, x y z */
    float size[3];   /* voxel edge, x y z */
    int cells[3];    /* voxels along x y z */
    Py_ssize_t max_voxels, max_points, features;
} Grid;

/* log2 of the hash table size for up to `voxels` voxels: at least twice as many slots. */
static uint32_t table_bits(Py_ssize_t voxels) {
    uint32_t bits = 4;
    while (((Py_ssize_t)1 << bits) < 2 * voxels) ++bits;
    return bits;
}

/* Map and voxelise one frame of n points (rows of g->features floats) into the output rows starting
 * at voxels / coords / num. Returns the number of voxels created. */
static Py_ssize_t frame_to_voxels(const float *restrict points, Py_ssize_t n, const double *affine, int32_t frame,
                                  const Grid *g, float *restrict voxels, int32_t *restrict coords, int32_t *restrict num,
                                  int64_t *restrict slots) {
    const Py_ssize_t c = g->features, slot = g->max_points * c, max_voxels = g->max_voxels;
    const int32_t max_points = (int32_t)g->max_points;
    const uint32_t nx = (uint32_t)g->cells[0], ny = (uint32_t)g->cells[1];
    const float lo[3] = {g->lo[0], g->lo[1], g->lo[2]}, size[3] = {g->size[0], g->size[1], g->size[2]};
    const float cells[3] = {(float)g->cells[0], (float)g->cells[1], (float)g->cells[2]};
    uint32_t last_key = UINT32_MAX;
    int32_t last_id = -1;
    Py_ssize_t used = 0;
    const uint32_t bits = table_bits(n < max_voxels ? n : max_voxels), mask = (1u << bits) - 1;
    memset(slots, 0xff, sizeof(int64_t) << bits); /* slot: cell key << 32 | voxel id, -1 = empty */
    for (Py_ssize_t i = 0; i < n; ++i) {
        const float *p = points + i * c;
        const double x = p[0], y = p[1], z = p[2];
        float mapped[3];
        int cell[3];
        int inside = 1;
        for (int k = 0; k < 3; ++k) {
            const double *row = affine + 4 * k;
            mapped[k] = (float)(row[0] * x + row[1] * y + row[2] * z + row[3]);
            /* floor(q) is in [0, cells) iff q is (cells is an integer), and there truncation is floor */
            const float q = (mapped[k] - lo[k]) / size[k];
            if (!(q >= 0.0f && q < cells[k])) { /* also drops NaN */
                inside = 0;
                break;
            }
            cell[k] = (int)q;
        }
        if (!inside) continue;
        const uint32_t key = ((uint32_t)cell[2] * ny + cell[1]) * nx + cell[0];
        uint32_t h = (key * 2654435761u) >> (32 - bits);
        int32_t id = key == last_key ? last_id : -1;
        if (id < 0) for (;; h = (h + 1) & mask) {
            const int64_t s = slots[h];
            if (s < 0) break;
            if ((uint32_t)(s >> 32) == key) { id = (int32_t)s; break; }
        }
        if (id < 0) {
            if (used >= max_voxels) continue;
            id = (int32_t)used++;
            slots[h] = ((int64_t)key << 32) | (uint32_t)id;
            coords[4 * id] = frame;
            coords[4 * id + 1] = cell[2];
            coords[4 * id + 2] = cell[1];
            coords[4 * id + 3] = cell[0];
            num[id] = 0;
            memset(voxels + id * slot, 0, (size_t)slot * sizeof(float));
        }
        last_key = key;
        last_id = id;
        if (num[id] < max_points) {
            float *dst = voxels + id * slot + num[id] * c;
            dst[0] = mapped[0];
            dst[1] = mapped[1];
            dst[2] = mapped[2];
            for (Py_ssize_t k = 3; k < c; ++k) dst[k] = p[k];
            num[id] += 1;
        }
    }
    return used;
}

/* Get a C-contiguous buffer of `obj` with item format `fmt` ("f", "d", "i" for int32, "q" for
 * int64) and `ndim` dimensions; sets a ValueError naming `what` and returns -1 otherwise. */
static int get_buffer(PyObject *obj, Py_buffer *view, const char *fmt, int ndim, int writable, const char *what) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0) return -1;
    const char *f = view->format;
    if (f[0] == '<' || f[0] == '=' || f[0] == '@') ++f;
    int ok = view->ndim == ndim;
    if (fmt[0] == 'i') ok = ok && view->itemsize == 4 && (f[0] == 'i' || f[0] == 'l') && f[1] == 0;
    else if (fmt[0] == 'q') ok = ok && view->itemsize == 8 && (f[0] == 'q' || f[0] == 'l') && f[1] == 0;
    else ok = ok && f[0] == fmt[0] && f[1] == 0;
    if (!ok) {
        PyErr_Format(PyExc_ValueError, "%s: expected a %d-d C-contiguous array of format '%s', got %d-d '%s'",
                     what, ndim, fmt, view->ndim, view->format);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(voxelize_doc,
"voxelize(clouds, affines, frame_ids, voxels, coords, num, lo, size, cells, max_voxels) -> int\n\n"
"Map clouds[i] ([N_i, C] float32) by affines[i] ([F, 3, 4] float64) and voxelise it as frame\n"
"frame_ids[i] ([F] int64) into the rows after frame i-1's: voxels [R, P, C] float32, coords [R, 4]\n"
"int32 (frame, z, y, x), num [R] int32. lo, size: the grid minimum and voxel size (x, y, z); cells:\n"
"voxels along x, y, z. R must be at least the sum of min(N_i, max_voxels). Returns the number of\n"
"voxels written. All arrays C-contiguous. Frees the GIL while it runs.");

enum { AFFINES, IDS, VOXELS, COORDS, NUM, ARRAYS };

static PyObject *voxelize(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *clouds, *objs[ARRAYS];
    Grid g;
    if (!PyArg_ParseTuple(args, "O!OOOOO(fff)(fff)(iii)n", &PyList_Type, &clouds, &objs[AFFINES], &objs[IDS],
                          &objs[VOXELS], &objs[COORDS], &objs[NUM], &g.lo[0], &g.lo[1], &g.lo[2], &g.size[0],
                          &g.size[1], &g.size[2], &g.cells[0], &g.cells[1], &g.cells[2], &g.max_voxels))
        return NULL;
    static const struct { const char *format, *name; int ndim, writable; } specs[ARRAYS] = {
        {"d", "affines", 3, 0}, {"q", "frame_ids", 1, 0}, {"f", "voxels", 3, 1}, {"i", "coords", 2, 1},
        {"i", "num", 1, 1},
    };
    const Py_ssize_t frames = PyList_GET_SIZE(clouds);
    Py_buffer arrays[ARRAYS];
    Py_buffer *views = PyMem_Calloc(frames ? frames : 1, sizeof(Py_buffer));
    if (views == NULL) return PyErr_NoMemory();
    Py_ssize_t held = 0, got = 0, rows = 0, most = 0, total = -1;
    for (; held < ARRAYS; ++held)
        if (get_buffer(objs[held], &arrays[held], specs[held].format, specs[held].ndim, specs[held].writable,
                       specs[held].name) < 0)
            goto done;
    const Py_buffer *affines = &arrays[AFFINES], *ids = &arrays[IDS], *voxels = &arrays[VOXELS];
    g.max_points = voxels->shape[1];
    g.features = voxels->shape[2];
    for (int k = 0; k < 3; ++k)
        if (g.cells[k] < 1 || !(g.size[k] > 0.0f)) {
            PyErr_SetString(PyExc_ValueError, "cells and size must be positive");
            goto done;
        }
    if ((int64_t)g.cells[0] * g.cells[1] * g.cells[2] > INT32_MAX) { /* a cell key is a non-negative int32 */
        PyErr_Format(PyExc_ValueError, "a grid of %d x %d x %d cells is too large (at most 2^31 - 1 cells)",
                     g.cells[0], g.cells[1], g.cells[2]);
        goto done;
    }
    if (affines->shape[0] != frames || affines->shape[1] != 3 || affines->shape[2] != 4 || ids->shape[0] != frames) {
        PyErr_Format(PyExc_ValueError, "%zd clouds need affines [%zd, 3, 4] and %zd frame ids", frames, frames, frames);
        goto done;
    }
    if (g.features < 3 || g.max_points < 1 || g.max_voxels < 1 || arrays[COORDS].shape[1] != 4 ||
        arrays[COORDS].shape[0] != voxels->shape[0] || arrays[NUM].shape[0] != voxels->shape[0]) {
        PyErr_SetString(PyExc_ValueError,
                        "outputs disagree: need voxels [R, P >= 1, C >= 3], coords [R, 4], num [R], max_voxels >= 1");
        goto done;
    }
    for (; got < frames; ++got) {
        char name[40];
        snprintf(name, sizeof name, "clouds[%zd]", got);
        if (get_buffer(PyList_GET_ITEM(clouds, got), &views[got], "f", 2, 0, name) < 0) goto done;
        if (views[got].shape[1] != g.features) {
            PyErr_Format(PyExc_ValueError, "clouds[%zd] has %zd columns, voxels have %zd", got, views[got].shape[1],
                         g.features);
            PyBuffer_Release(&views[got]);
            goto done;
        }
        const Py_ssize_t n = views[got].shape[0];
        rows += n < g.max_voxels ? n : g.max_voxels;
        most = n > most ? n : most;
    }
    if (rows > voxels->shape[0]) {
        PyErr_Format(PyExc_ValueError, "outputs hold %zd voxels, the frames may need %zd", voxels->shape[0], rows);
        goto done;
    }
    const int64_t *frame_ids = ids->buf;
    for (Py_ssize_t i = 0; i < frames; ++i)
        if (frame_ids[i] < 0 || frame_ids[i] > INT32_MAX) {
            PyErr_Format(PyExc_ValueError, "frame id %lld is not a non-negative int32", (long long)frame_ids[i]);
            goto done;
        }
    int64_t *slots = PyMem_RawMalloc(sizeof(int64_t) << table_bits(most < g.max_voxels ? most : g.max_voxels));
    if (slots == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    const Py_ssize_t slot = g.max_points * g.features;
    total = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < frames; ++i)
        total += frame_to_voxels(views[i].buf, views[i].shape[0], (const double *)affines->buf + 12 * i,
                                 (int32_t)frame_ids[i], &g, (float *)voxels->buf + total * slot,
                                 (int32_t *)arrays[COORDS].buf + 4 * total, (int32_t *)arrays[NUM].buf + total, slots);
    Py_END_ALLOW_THREADS
    PyMem_RawFree(slots);
done:
    for (Py_ssize_t i = 0; i < got; ++i) PyBuffer_Release(&views[i]);
    PyMem_Free(views);
    for (Py_ssize_t i = 0; i < held; ++i) PyBuffer_Release(&arrays[i]);
    return total < 0 ? NULL : PyLong_FromSsize_t(total);
}

static PyMethodDef methods[] = {
    {"voxelize", voxelize, METH_VARARGS, voxelize_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, .m_name = "_voxel", .m_doc = "Fused map-and-voxelise kernel; see trainer/data/voxelize.py.",
    .m_size = -1, .m_methods = methods,
};

PyMODINIT_FUNC PyInit__voxel(void) { return PyModule_Create(&module); }
