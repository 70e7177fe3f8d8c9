/*
 * oomemu.trace._ring: the compiled record writer for the per-CPU trace rings.
 *
 * The pure-Python writer in ring.py/events.py is the reference; this module writes the same 64-byte records
 * (layout in ring.py) in one C call per event, so that recording costs a fraction of a microsecond. It is
 * optional: when it cannot be built, the emulator uses the Python writer and behaves the same, only slower.
 *
 *   RingCore  the base of ring.RingWriter: pointers into the shared segment plus the writer-local `written`
 *             and `limit`, which the Python side (emit_many, room) reads and updates through members.
 *   Emitter   one per event in the catalogue: emitter(cpu, a0=0, .., a4=0, *, pid=None, seq=0) records the
 *             event on cpu.trace, or does nothing when cpu.trace is None.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#define RECORD_SHIFT 6
#define H_WRITTEN 0
#define H_DRAINED 1
#define H_LOST 2

typedef struct {
    int64_t ts;
    int64_t seq;
    int32_t event;
    int32_t pid;
    int64_t a[5];
} record_t;

_Static_assert(sizeof(record_t) == 1 << RECORD_SHIFT, "a trace record is 64 bytes");

typedef struct {
    PyObject_HEAD
    Py_buffer records_view;     /* this ring's records */
    Py_buffer head_view;        /* this ring's head row: written, drained, lost */
    Py_buffer pid_view;         /* the task_pid column (int32), for the pid of `current` */
    int attached;
    char *records;
    int64_t *head;
    int32_t *pid_of;
    Py_ssize_t max_tasks;
    long long written;          /* records written; the writer's own copy of head[H_WRITTEN] */
    long long limit;            /* written may grow up to this before the consumer's position is re-read */
    long long mask;
    long long n;
    long long boot;             /* CLOCK_MONOTONIC ns at boot: timestamps are relative to it */
    Py_buffer vclock_view;      /* controlled modes: the virtual clock word in the segment */
    int has_vclock;
    const int64_t *vclock;
} RingCore;

static PyTypeObject RingCore_Type;
static PyObject *str_trace, *str_current, *str_pid, *str_seq;

static void
ringcore_release(RingCore *self)
{
    if (self->attached) {
        PyBuffer_Release(&self->records_view);
        PyBuffer_Release(&self->head_view);
        PyBuffer_Release(&self->pid_view);
        self->attached = 0;
    }
    if (self->has_vclock) {
        PyBuffer_Release(&self->vclock_view);
        self->has_vclock = 0;
    }
    self->vclock = NULL;
    self->records = NULL;
    self->head = NULL;
    self->pid_of = NULL;
}

static void
ringcore_dealloc(RingCore *self)
{
    ringcore_release(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
get_writable(PyObject *obj, Py_buffer *view, Py_ssize_t min_len, const char *what)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0)
        return -1;
    if (view->len < min_len) {
        PyErr_Format(PyExc_ValueError, "%s: %zd bytes, need at least %zd", what, view->len, min_len);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(ringcore_attach_doc,
"_attach(records, head, pid_of, n, boot)\n\n"
"Point the writer at its ring: `records` (n * 64 bytes), `head` (its int64 head row) and `pid_of` (the\n"
"int32 task_pid column), all writable buffers over the shared segment; `n` is a power of two.");

static PyObject *
ringcore_attach(RingCore *self, PyObject *args)
{
    PyObject *records, *head, *pid_of;
    long long n, boot;
    if (!PyArg_ParseTuple(args, "OOOLL:_attach", &records, &head, &pid_of, &n, &boot))
        return NULL;
    if (n <= 0 || (n & (n - 1))) {
        PyErr_SetString(PyExc_ValueError, "ring sizes are powers of two");
        return NULL;
    }
    ringcore_release(self);
    if (get_writable(records, &self->records_view, (Py_ssize_t)n << RECORD_SHIFT, "records") < 0)
        return NULL;
    if (get_writable(head, &self->head_view, 3 * sizeof(int64_t), "head") < 0) {
        PyBuffer_Release(&self->records_view);
        return NULL;
    }
    if (get_writable(pid_of, &self->pid_view, 0, "pid_of") < 0) {
        PyBuffer_Release(&self->records_view);
        PyBuffer_Release(&self->head_view);
        return NULL;
    }
    self->attached = 1;
    self->records = self->records_view.buf;
    self->head = self->head_view.buf;
    self->pid_of = self->pid_view.buf;
    self->max_tasks = self->pid_view.len / (Py_ssize_t)sizeof(int32_t);
    self->n = n;
    self->mask = n - 1;
    self->boot = boot;
    self->written = __atomic_load_n(&self->head[H_WRITTEN], __ATOMIC_RELAXED);
    self->limit = 0;
    Py_RETURN_NONE;
}

/* Re-read the consumer's position; true if one more record fits. In a controlled mode (a virtual clock) a
   full ring waits for the supervisor's drain instead of dropping records: only this process runs, so waiting
   changes nothing but wall time, and the trace stays the same for the same schedule. */
static inline int
ring_room(RingCore *r)
{
    r->limit = __atomic_load_n(&r->head[H_DRAINED], __ATOMIC_ACQUIRE) + r->n;
    if (r->written < r->limit || !r->vclock)
        return r->written < r->limit;
    for (int tries = 0; tries < 250000 && r->written >= r->limit; tries++) {   /* at most ~5 s */
        struct timespec nap = {0, 20000};
        Py_BEGIN_ALLOW_THREADS
        nanosleep(&nap, NULL);
        Py_END_ALLOW_THREADS
        r->limit = __atomic_load_n(&r->head[H_DRAINED], __ATOMIC_ACQUIRE) + r->n;
    }
    return r->written < r->limit;
}

static inline void
ring_put(RingCore *r, const record_t *rec)
{
    memcpy(r->records + ((r->written & r->mask) << RECORD_SHIFT), rec, sizeof *rec);
    r->written += 1;
}

static inline void
ring_publish(RingCore *r)
{
    /* the records' bytes are visible before the consumer sees the new count */
    __atomic_store_n(&r->head[H_WRITTEN], (int64_t)r->written, __ATOMIC_RELEASE);
}

static inline int64_t
now_since_boot(RingCore *r)
{
    if (r->vclock)                          /* a controlled mode: virtual ns since boot */
        return __atomic_load_n(r->vclock, __ATOMIC_RELAXED);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);   /* the clock time.monotonic_ns reads */
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec - r->boot;
}

PyDoc_STRVAR(ringcore_emit_many_doc,
"_emit_many(event, pid, seq, count, args) -> records written\n\n"
"Append `count` records of one event; `args` holds the five arguments, each an int (the same in every\n"
"record) or a contiguous int64 buffer of at least `count` values. What does not fit is counted lost.");

static PyObject *
ringcore_emit_many(RingCore *self, PyObject *args)
{
    int event, pid;
    long long seq;
    Py_ssize_t count;
    PyObject *vals;
    Py_buffer views[5];
    const int64_t *arrays[5] = {NULL};
    record_t rec = {0};
    int nviews = 0, i;
    PyObject *result = NULL;

    if (!PyArg_ParseTuple(args, "iiLnO!:_emit_many", &event, &pid, &seq, &count, &PyTuple_Type, &vals))
        return NULL;
    if (!self->attached || PyTuple_GET_SIZE(vals) != 5 || count < 0) {
        PyErr_SetString(PyExc_ValueError, "_emit_many: an attached ring, 5 arguments and count >= 0");
        return NULL;
    }
    for (i = 0; i < 5; i++) {
        PyObject *v = PyTuple_GET_ITEM(vals, i);
        if (PyLong_Check(v)) {
            rec.a[i] = PyLong_AsLongLong(v);
            if (rec.a[i] == -1 && PyErr_Occurred())
                goto done;
            continue;
        }
        if (PyObject_GetBuffer(v, &views[nviews], PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
            goto done;
        Py_buffer *view = &views[nviews++];
        const char *fmt = view->format ? view->format : "B";
        char code = fmt[strlen(fmt) - 1];
        int foreign = fmt[0] == '>' || fmt[0] == '!';   /* numpy gives native-endian int64 as "l" or "<q" */
        if (view->itemsize != 8 || (code != 'l' && code != 'q') || foreign || view->len / 8 < count) {
            PyErr_Format(PyExc_TypeError, "_emit_many: argument %d is not an int64 array of %zd values", i, count);
            goto done;
        }
        arrays[i] = view->buf;
    }

    if (self->written + count > self->limit) {
        ring_room(self);
        for (int tries = 0; self->vclock && count <= self->n && self->written + count > self->limit
                            && tries < 250000; tries++) {   /* controlled modes: wait for the drain */
            struct timespec nap = {0, 20000};
            Py_BEGIN_ALLOW_THREADS
            nanosleep(&nap, NULL);
            Py_END_ALLOW_THREADS
            self->limit = __atomic_load_n(&self->head[H_DRAINED], __ATOMIC_ACQUIRE) + self->n;
        }
    }
    Py_ssize_t fit = self->limit - self->written;
    if (fit > count)
        fit = count;
    if (fit < 0)
        fit = 0;
    if (fit < count)
        self->head[H_LOST] += count - fit;
    rec.ts = now_since_boot(self);
    rec.seq = seq;
    rec.event = event;
    rec.pid = pid;
    for (Py_ssize_t j = 0; j < fit; j++) {
        for (i = 0; i < 5; i++)
            if (arrays[i])
                rec.a[i] = arrays[i][j];
        ring_put(self, &rec);
    }
    ring_publish(self);
    result = PyLong_FromSsize_t(fit);
done:
    while (nviews > 0)
        PyBuffer_Release(&views[--nviews]);
    return result;
}

PyDoc_STRVAR(ringcore_use_clock_doc,
"_use_clock(word)\n\n"
"Take timestamps from `word` (a writable buffer of one int64: the controlled modes' virtual clock, in ns\n"
"since boot) instead of CLOCK_MONOTONIC.");

static PyObject *
ringcore_use_clock(RingCore *self, PyObject *arg)
{
    if (self->has_vclock) {
        PyBuffer_Release(&self->vclock_view);
        self->has_vclock = 0;
        self->vclock = NULL;
    }
    if (get_writable(arg, &self->vclock_view, sizeof(int64_t), "clock word") < 0)
        return NULL;
    self->has_vclock = 1;
    self->vclock = self->vclock_view.buf;
    Py_RETURN_NONE;
}

static PyMethodDef ringcore_methods[] = {
    {"_use_clock", (PyCFunction)ringcore_use_clock, METH_O, ringcore_use_clock_doc},
    {"_attach", (PyCFunction)ringcore_attach, METH_VARARGS, ringcore_attach_doc},
    {"_emit_many", (PyCFunction)ringcore_emit_many, METH_VARARGS, ringcore_emit_many_doc},
    {NULL}
};

static PyMemberDef ringcore_members[] = {
    {"written", T_LONGLONG, offsetof(RingCore, written), 0, "records written (the writer's own count)"},
    {"limit", T_LONGLONG, offsetof(RingCore, limit), 0, "how far `written` may go before re-reading the consumer"},
    {"n", T_LONGLONG, offsetof(RingCore, n), READONLY, "records in the ring"},
    {"mask", T_LONGLONG, offsetof(RingCore, mask), READONLY, "n - 1"},
    {"boot", T_LONGLONG, offsetof(RingCore, boot), READONLY, "CLOCK_MONOTONIC ns at boot"},
    {NULL}
};

static PyTypeObject RingCore_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "oomemu.trace._ring.RingCore",
    .tp_basicsize = sizeof(RingCore),
    .tp_dealloc = (destructor)ringcore_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "The compiled half of a trace ring writer (see ring.RingWriter).",
    .tp_methods = ringcore_methods,
    .tp_members = ringcore_members,
    .tp_new = PyType_GenericNew,
};

/* --- Emitter ------------------------------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    int32_t event;
    PyObject *name;
    PyObject *doc;
    vectorcallfunc vectorcall;
} Emitter;

static int
as_int64(PyObject *o, int64_t *out)
{
    long long v;
    if (PyLong_CheckExact(o)) {
        v = PyLong_AsLongLong(o);
    } else {
        /* numpy integers and bools, as struct.pack_into accepts them; floats are refused the same way */
        PyObject *i = PyNumber_Index(o);
        if (i == NULL)
            return -1;
        v = PyLong_AsLongLong(i);
        Py_DECREF(i);
    }
    if (v == -1 && PyErr_Occurred())
        return -1;
    *out = v;
    return 0;
}

static PyObject *
emitter_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Emitter *self = (Emitter *)callable;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    PyObject *pid_obj = NULL, *seq_obj = NULL;
    record_t rec = {0};

    if (nargs < 1 || nargs > 6) {
        PyErr_Format(PyExc_TypeError, "%U() takes from 1 to 6 positional arguments (%zd given)", self->name, nargs);
        return NULL;
    }
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, k);
        if (key == str_pid || PyUnicode_Compare(key, str_pid) == 0)
            pid_obj = args[nargs + k];
        else if (key == str_seq || PyUnicode_Compare(key, str_seq) == 0)
            seq_obj = args[nargs + k];
        else {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_TypeError, "%U() got an unexpected keyword argument '%U'", self->name, key);
            return NULL;
        }
    }

    PyObject *trace = PyObject_GetAttr(args[0], str_trace);
    if (trace == NULL)
        return NULL;
    if (trace == Py_None) {
        Py_DECREF(trace);
        Py_RETURN_NONE;
    }
    if (!PyObject_TypeCheck(trace, &RingCore_Type) || !((RingCore *)trace)->attached) {
        PyErr_Format(PyExc_TypeError, "%U(): cpu.trace is not an attached compiled ring writer", self->name);
        Py_DECREF(trace);
        return NULL;
    }
    RingCore *r = (RingCore *)trace;

    for (Py_ssize_t i = 1; i < nargs; i++)
        if (as_int64(args[i], &rec.a[i - 1]) < 0)
            goto fail;
    if (seq_obj != NULL && as_int64(seq_obj, &rec.seq) < 0)
        goto fail;
    if (pid_obj != NULL && pid_obj != Py_None) {
        int64_t pid;
        if (as_int64(pid_obj, &pid) < 0)
            goto fail;
        rec.pid = (int32_t)pid;
    } else {
        PyObject *cur = PyObject_GetAttr(args[0], str_current);
        int64_t task;
        if (cur == NULL)
            goto fail;
        int bad = as_int64(cur, &task);
        Py_DECREF(cur);
        if (bad < 0)
            goto fail;
        if (task >= r->max_tasks) {
            PyErr_Format(PyExc_IndexError, "%U(): current task row %lld out of range", self->name, (long long)task);
            goto fail;
        }
        rec.pid = task >= 0 ? r->pid_of[task] : 0;
    }
    rec.event = self->event;

    if (r->written >= r->limit && !ring_room(r)) {
        r->head[H_LOST] += 1;       /* only this writer touches `lost` */
    } else {
        rec.ts = now_since_boot(r);
        ring_put(r, &rec);
        ring_publish(r);
    }
    Py_DECREF(trace);
    Py_RETURN_NONE;
fail:
    Py_DECREF(trace);
    return NULL;
}

static PyObject *
emitter_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"event", "name", "doc", NULL};
    int event;
    PyObject *name, *doc = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iU|O:Emitter", kwlist, &event, &name, &doc))
        return NULL;
    Emitter *self = (Emitter *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->event = event;
    self->name = Py_NewRef(name);
    self->doc = Py_NewRef(doc);
    self->vectorcall = emitter_vectorcall;
    return (PyObject *)self;
}

static void
emitter_dealloc(Emitter *self)
{
    Py_XDECREF(self->name);
    Py_XDECREF(self->doc);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
emitter_repr(Emitter *self)
{
    return PyUnicode_FromFormat("<compiled emitter %U (event %d)>", self->name, self->event);
}

static PyMemberDef emitter_members[] = {
    {"__name__", T_OBJECT, offsetof(Emitter, name), READONLY, NULL},
    {"__doc__", T_OBJECT, offsetof(Emitter, doc), READONLY, NULL},
    {"event", T_INT, offsetof(Emitter, event), READONLY, "the event id"},
    {NULL}
};

static PyTypeObject Emitter_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "oomemu.trace._ring.Emitter",
    .tp_basicsize = sizeof(Emitter),
    .tp_dealloc = (destructor)emitter_dealloc,
    .tp_repr = (reprfunc)emitter_repr,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Emitter, vectorcall),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "Emitter(event, name, doc): records one event on cpu.trace when called.",
    .tp_members = emitter_members,
    .tp_new = emitter_new,
};

/* --- atomic bit operations on shared int64 words ------------------------------------------------------------
 *
 * atomic_fetch_or(words, index, mask) and atomic_fetch_and(words, index, mask) apply one locked read-modify-write
 * to words[index] (any writable buffer of int64, e.g. a column of the shared segment) and return the old value:
 * the kernel's set_bit/clear_bit family, for flag words that several CPU processes update (sync.py).
 * atomic_fetch_add(words, index, delta) is atomic64_add_return's sibling, for counters updated without a lock.
 */

static int
word_at(PyObject *const *args, Py_ssize_t nargs, Py_buffer *view, int64_t **word, long long *mask)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "expected (words, index, mask)");
        return -1;
    }
    if (PyObject_GetBuffer(args[0], view, PyBUF_WRITABLE) < 0)
        return -1;
    Py_ssize_t index = PyLong_AsSsize_t(args[1]);
    *mask = PyLong_AsLongLong(args[2]);
    if (PyErr_Occurred()) {
        PyBuffer_Release(view);
        return -1;
    }
    if (view->len % (Py_ssize_t)sizeof(int64_t) || index < 0 || index >= view->len / (Py_ssize_t)sizeof(int64_t)) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_IndexError, "word index out of range (or not an int64 buffer)");
        return -1;
    }
    *word = (int64_t *)view->buf + index;
    return 0;
}

static PyObject *
atomic_fetch_or(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    int64_t *word;
    long long mask;
    if (word_at(args, nargs, &view, &word, &mask) < 0)
        return NULL;
    int64_t old = __atomic_fetch_or(word, (int64_t)mask, __ATOMIC_SEQ_CST);
    PyBuffer_Release(&view);
    return PyLong_FromLongLong(old);
}

static PyObject *
atomic_fetch_and(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    int64_t *word;
    long long mask;
    if (word_at(args, nargs, &view, &word, &mask) < 0)
        return NULL;
    int64_t old = __atomic_fetch_and(word, (int64_t)mask, __ATOMIC_SEQ_CST);
    PyBuffer_Release(&view);
    return PyLong_FromLongLong(old);
}

static PyObject *
atomic_fetch_add(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    int64_t *word;
    long long delta;
    if (word_at(args, nargs, &view, &word, &delta) < 0)
        return NULL;
    int64_t old = __atomic_fetch_add(word, (int64_t)delta, __ATOMIC_SEQ_CST);
    PyBuffer_Release(&view);
    return PyLong_FromLongLong(old);
}

static PyMethodDef module_methods[] = {
    {"atomic_fetch_or", (PyCFunction)(void (*)(void))atomic_fetch_or, METH_FASTCALL,
     "atomic_fetch_or(words, index, mask) -> old: words[index] |= mask as one atomic operation."},
    {"atomic_fetch_and", (PyCFunction)(void (*)(void))atomic_fetch_and, METH_FASTCALL,
     "atomic_fetch_and(words, index, mask) -> old: words[index] &= mask as one atomic operation."},
    {"atomic_fetch_add", (PyCFunction)(void (*)(void))atomic_fetch_add, METH_FASTCALL,
     "atomic_fetch_add(words, index, delta) -> old: words[index] += delta as one atomic operation."},
    {NULL}
};

static struct PyModuleDef ring_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "oomemu.trace._ring",
    .m_doc = "Compiled trace-ring writer and atomic word operations (optional; ring.py and sync.py hold the "
             "Python references).",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__ring(void)
{
    if (PyType_Ready(&RingCore_Type) < 0 || PyType_Ready(&Emitter_Type) < 0)
        return NULL;
    str_trace = PyUnicode_InternFromString("trace");
    str_current = PyUnicode_InternFromString("current");
    str_pid = PyUnicode_InternFromString("pid");
    str_seq = PyUnicode_InternFromString("seq");
    if (!str_trace || !str_current || !str_pid || !str_seq)
        return NULL;
    PyObject *mod = PyModule_Create(&ring_module);
    if (mod == NULL)
        return NULL;
    if (PyModule_AddObjectRef(mod, "RingCore", (PyObject *)&RingCore_Type) < 0 ||
        PyModule_AddObjectRef(mod, "Emitter", (PyObject *)&Emitter_Type) < 0 ||
        PyModule_AddIntConstant(mod, "RECORD_SIZE", sizeof(record_t)) < 0) {
        Py_DECREF(mod);
        return NULL;
    }
    return mod;
}
