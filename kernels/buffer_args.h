/*
 * Buffer arguments of the compiled extensions (cpu_guided_filter.c, cpu_segmentation.c): each
 * entry point states, per array, its name, the values it needs at least, their size in bytes
 * and whether it writes them; get_buffers acquires them all C-contiguous or none.
 */
#ifndef SSS_RT_BUFFER_ARGS_H
#define SSS_RT_BUFFER_ARGS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* A buffer argument: at least `items` C-contiguous values of `itemsize` bytes, written if
 * `writable`. */
typedef struct {
    const char *name;
    Py_ssize_t items;
    int itemsize, writable;
} BufferArg;

static void release_buffers(Py_buffer *views, int n)
{
    for (int i = 0; i < n; ++i)
        PyBuffer_Release(&views[i]);
}

/* Acquire n buffers as described; on failure release those acquired, set an exception and
 * return -1. */
static int get_buffers(PyObject *const *objs, Py_buffer *views, const BufferArg *args, int n)
{
    for (int i = 0; i < n; ++i) {
        const int flags = PyBUF_C_CONTIGUOUS | (args[i].writable ? PyBUF_WRITABLE : 0);
        int bad = PyObject_GetBuffer(objs[i], &views[i], flags) < 0;
        if (!bad && (views[i].itemsize != args[i].itemsize ||
                     views[i].len < args[i].items * args[i].itemsize)) {
            PyErr_Format(PyExc_ValueError, "%s: expected at least %zd contiguous values of %d bytes",
                         args[i].name, args[i].items, args[i].itemsize);
            PyBuffer_Release(&views[i]);
            bad = 1;
        }
        if (bad) {
            release_buffers(views, i);
            return -1;
        }
    }
    return 0;
}

#endif
