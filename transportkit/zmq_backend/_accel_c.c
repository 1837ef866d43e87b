/*
 * transportkit.zmq_backend._accel: whole-message send and receive for the blocking
 * sockets, in one call each.
 *
 * Why: pyzmq's receive returns one frame, and asking libzmq whether more frames
 * follow costs more than the receive itself (getsockopt(RCVMORE) goes through
 * pyzmq's option lookup). Here a receive takes every frame of a message and asks
 * zmq_msg_more() in C, so a multipart-correct receive costs what pyzmq's
 * single-frame receive costs.
 *
 * How: plain CPython C API. libzmq is not linked: _accel.py finds the libzmq that
 * pyzmq itself loaded and passes the addresses of the few functions used to init().
 * Sockets are pyzmq sockets; their handle is read from `underlying` on every call,
 * which pyzmq sets to 0 when the socket is closed (by us, by Context.destroy or by
 * the garbage collector), so a closed socket gives ENOTSOCK rather than a dangling
 * pointer.
 *
 * Errors: a libzmq error calls error_factory(errno) (zmq.Again, zmq.ZMQError...) and
 * raises what it returns. EINTR runs the signal handlers (Ctrl-C raises
 * KeyboardInterrupt) and retries. A frame that is not a contiguous buffer raises
 * TypeError/BufferError before anything is sent, so a bad frame never leaves half a
 * message in the socket.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <stddef.h>

/* libzmq's ABI (zmq.h, 4.x): an opaque 64-byte message, pointer-aligned. */
typedef union {
    unsigned char bytes[64];
    void *align_pointer;
    double align_double;
} zmq_msg_t;

#define ZMQ_DONTWAIT 1
#define ZMQ_SNDMORE 2

static int (*zmq_msg_init_p)(zmq_msg_t *);
static int (*zmq_msg_recv_p)(zmq_msg_t *, void *, int);
static void *(*zmq_msg_data_p)(zmq_msg_t *);
static size_t (*zmq_msg_size_p)(const zmq_msg_t *);
static int (*zmq_msg_more_p)(const zmq_msg_t *);
static int (*zmq_msg_close_p)(zmq_msg_t *);
static int (*zmq_send_p)(void *, const void *, size_t, int);
static int (*zmq_errno_p)(void);

static PyObject *error_factory; /* callable(errno) -> exception instance */
static PyObject *underlying_name; /* interned "underlying" */
static int initialized;

/* Raise error_factory(err); always returns -1. */
static int
raise_zmq_error(int err)
{
    PyObject *exc = PyObject_CallFunction(error_factory, "i", err);
    if (exc == NULL) {
        return -1;
    }
    if (PyExceptionInstance_Check(exc)) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    }
    else {
        PyErr_Format(PyExc_TypeError, "error_factory returned %R, not an exception", exc);
    }
    Py_DECREF(exc);
    return -1;
}

/* The libzmq socket of a pyzmq socket; NULL with an exception set if there is none. */
static void *
handle_of(PyObject *sock)
{
    PyObject *value = PyObject_GetAttr(sock, underlying_name);
    if (value == NULL) {
        return NULL;
    }
    void *handle = PyLong_AsVoidPtr(value);
    Py_DECREF(value);
    if (handle == NULL && !PyErr_Occurred()) {
        raise_zmq_error(ENOTSOCK); /* closed: pyzmq zeroes the handle */
    }
    return handle;
}

static int
parse_flags(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t index, int *flags)
{
    *flags = 0;
    if (nargs > index) {
        long value = PyLong_AsLong(args[index]);
        if (value == -1 && PyErr_Occurred()) {
            return -1;
        }
        *flags = (int)value;
    }
    return 0;
}

#define REQUIRE_INIT()                                                                  \
    do {                                                                                \
        if (!initialized) {                                                             \
            PyErr_SetString(PyExc_RuntimeError, "transportkit accelerator not initialised"); \
            return NULL;                                                                \
        }                                                                               \
    } while (0)

/*
 * One libzmq call that may block, made with the GIL released (so other threads run
 * while it waits, as with pyzmq). With try_first, it is first tried without blocking
 * while holding the GIL: a message already queued then costs no GIL release and
 * re-acquisition; only if it would block is it made again with the GIL released. A
 * failed non-blocking attempt has no effect, so the result is the blocking call's.
 * A call the caller made non-blocking (ZMQ_DONTWAIT) always releases the GIL: a
 * busy-polling loop of them would otherwise hold it for Python's whole switch
 * interval (5 ms) and starve a peer thread in the same process.
 * Receives try first; sends do not: a send that keeps the GIL delays the thread it
 * just woke (an inproc peer in this process), which measurably worsened the P99 of
 * inproc round trips. Returns 0, or -1 with an exception set.
 */
#define BLOCKING_CALL(call_with_flags, flags, try_first)                                \
    do {                                                                                \
        int rc_, err_;                                                                  \
        if ((try_first) && !((flags) & ZMQ_DONTWAIT)) {                                 \
            rc_ = call_with_flags((flags) | ZMQ_DONTWAIT);                              \
            if (rc_ >= 0) {                                                             \
                return 0;                                                               \
            }                                                                           \
            err_ = zmq_errno_p();                                                       \
            if (err_ != EAGAIN && err_ != EINTR) {                                      \
                return raise_zmq_error(err_);                                           \
            }                                                                           \
        }                                                                               \
        for (;;) {                                                                      \
            Py_BEGIN_ALLOW_THREADS                                                      \
            rc_ = call_with_flags(flags);                                               \
            err_ = rc_ < 0 ? zmq_errno_p() : 0;                                         \
            Py_END_ALLOW_THREADS                                                        \
            if (rc_ >= 0) {                                                             \
                return 0;                                                               \
            }                                                                           \
            if (err_ != EINTR) {                                                        \
                return raise_zmq_error(err_);                                           \
            }                                                                           \
            if (PyErr_CheckSignals() < 0) {                                             \
                return -1;                                                              \
            }                                                                           \
        }                                                                               \
    } while (0)

static int
recv_frame(zmq_msg_t *msg, void *handle, int flags)
{
#define RECV_WITH(f) zmq_msg_recv_p(msg, handle, (f))
    BLOCKING_CALL(RECV_WITH, flags, 1);
#undef RECV_WITH
}

static int
send_frame(void *handle, const void *data, size_t size, int flags)
{
#define SEND_WITH(f) zmq_send_p(handle, data, size, (f))
    BLOCKING_CALL(SEND_WITH, flags, 0);
#undef SEND_WITH
}

PyDoc_STRVAR(recv_message_doc,
"recv_message(sock, flags=0, /) -> list[bytes]\n\n"
"Receive every frame of one message from a pyzmq socket. If a frame after the first\n"
"fails (only when the socket or context is torn down), the rest stays in the socket,\n"
"as with pyzmq's recv_multipart.");

static PyObject *
recv_message(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    REQUIRE_INIT();
    int flags;
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "recv_message(sock, flags=0)");
        return NULL;
    }
    if (parse_flags(args, nargs, 1, &flags) < 0) {
        return NULL;
    }
    void *handle = handle_of(args[0]);
    if (handle == NULL) {
        return NULL;
    }
    PyObject *frames = PyList_New(0);
    if (frames == NULL) {
        return NULL;
    }
    zmq_msg_t msg;
    int more;
    do {
        zmq_msg_init_p(&msg);
        if (recv_frame(&msg, handle, flags) < 0) {
            zmq_msg_close_p(&msg);
            Py_DECREF(frames);
            return NULL;
        }
        PyObject *frame = PyBytes_FromStringAndSize(
            (const char *)zmq_msg_data_p(&msg), (Py_ssize_t)zmq_msg_size_p(&msg));
        more = zmq_msg_more_p(&msg);
        zmq_msg_close_p(&msg);
        if (frame == NULL) {
            Py_DECREF(frames);
            return NULL;
        }
        int appended = PyList_Append(frames, frame);
        Py_DECREF(frame);
        if (appended < 0) {
            Py_DECREF(frames);
            return NULL;
        }
    } while (more);
    return frames;
}

PyDoc_STRVAR(send_message_doc,
"send_message(sock, frames, flags=0, /) -> None\n\n"
"Send a sequence of buffers as one message (copying each). Every frame is checked\n"
"before the first is sent.");

#define STACK_FRAMES 8

static PyObject *
send_message(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    REQUIRE_INIT();
    int flags;
    if (nargs < 2 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "send_message(sock, frames, flags=0)");
        return NULL;
    }
    if (parse_flags(args, nargs, 2, &flags) < 0) {
        return NULL;
    }
    /* A tuple owns its items, so no other thread can free a frame while the GIL is
     * released during a send (a list could be changed meanwhile). */
    PyObject *frames = PySequence_Tuple(args[1]);
    if (frames == NULL) {
        return NULL;
    }
    Py_ssize_t count = PyTuple_GET_SIZE(frames);
    if (count == 0) {
        Py_DECREF(frames);
        PyErr_SetString(PyExc_ValueError, "a message needs at least one frame");
        return NULL;
    }
    Py_buffer stack_views[STACK_FRAMES];
    Py_buffer *views = stack_views;
    if (count > STACK_FRAMES) {
        views = PyMem_Calloc((size_t)count, sizeof(Py_buffer));
        if (views == NULL) {
            Py_DECREF(frames);
            return PyErr_NoMemory();
        }
    }
    void *handle = NULL;
    Py_ssize_t acquired = 0;
    int rc = 0;
    for (; acquired < count; acquired++) {
        PyObject *frame = PyTuple_GET_ITEM(frames, acquired);
        if (PyBytes_CheckExact(frame)) {
            /* Immutable and owned by the tuple: no buffer to acquire. */
            views[acquired].obj = NULL;
            views[acquired].buf = PyBytes_AS_STRING(frame);
            views[acquired].len = PyBytes_GET_SIZE(frame);
        }
        else if (PyObject_GetBuffer(frame, &views[acquired], PyBUF_SIMPLE) < 0) {
            rc = -1;
            break;
        }
    }
    if (rc == 0) {
        handle = handle_of(args[0]);
        rc = handle == NULL ? -1 : 0;
    }
    for (Py_ssize_t i = 0; rc == 0 && i < count; i++) {
        rc = send_frame(handle, views[i].buf, (size_t)views[i].len,
                        flags | (i < count - 1 ? ZMQ_SNDMORE : 0));
    }
    for (Py_ssize_t i = 0; i < acquired; i++) {
        if (views[i].obj != NULL) {
            PyBuffer_Release(&views[i]);
        }
    }
    if (views != stack_views) {
        PyMem_Free(views);
    }
    Py_DECREF(frames);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static int
address_of(PyObject *addresses, const char *name, void **out)
{
    PyObject *value = PyDict_GetItemString(addresses, name); /* borrowed */
    if (value == NULL) {
        PyErr_Format(PyExc_KeyError, "no address for %s", name);
        return -1;
    }
    *out = PyLong_AsVoidPtr(value);
    if (*out == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_Format(PyExc_ValueError, "address of %s is NULL", name);
        }
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(init_doc,
"init(addresses, error_factory, /) -> None\n\n"
"addresses maps zmq_msg_init, zmq_msg_recv, zmq_msg_data, zmq_msg_size, zmq_msg_more,\n"
"zmq_msg_close, zmq_send and zmq_errno to their addresses in pyzmq's libzmq;\n"
"error_factory(errno) returns the exception to raise for a libzmq error.");

static PyObject *
init(PyObject *module, PyObject *args)
{
    PyObject *addresses, *factory;
    if (!PyArg_ParseTuple(args, "O!O:init", &PyDict_Type, &addresses, &factory)) {
        return NULL;
    }
    if (!PyCallable_Check(factory)) {
        PyErr_SetString(PyExc_TypeError, "error_factory must be callable");
        return NULL;
    }
    static const char *names[] = {
        "zmq_msg_init", "zmq_msg_recv", "zmq_msg_data", "zmq_msg_size",
        "zmq_msg_more", "zmq_msg_close", "zmq_send", "zmq_errno",
    };
    void *found[sizeof(names) / sizeof(names[0])];
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (address_of(addresses, names[i], &found[i]) < 0) {
            return NULL;
        }
    }
    *(void **)&zmq_msg_init_p = found[0];
    *(void **)&zmq_msg_recv_p = found[1];
    *(void **)&zmq_msg_data_p = found[2];
    *(void **)&zmq_msg_size_p = found[3];
    *(void **)&zmq_msg_more_p = found[4];
    *(void **)&zmq_msg_close_p = found[5];
    *(void **)&zmq_send_p = found[6];
    *(void **)&zmq_errno_p = found[7];
    Py_INCREF(factory);
    Py_XSETREF(error_factory, factory);
    initialized = 1;
    Py_RETURN_NONE;
}

static PyMethodDef accel_methods[] = {
    {"init", (PyCFunction)init, METH_VARARGS, init_doc},
    {"recv_message", (PyCFunction)(void (*)(void))recv_message, METH_FASTCALL,
     recv_message_doc},
    {"send_message", (PyCFunction)(void (*)(void))send_message, METH_FASTCALL,
     send_message_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef accel_module = {
    PyModuleDef_HEAD_INIT,
    "transportkit.zmq_backend._accel_c",
    "Whole-message send and receive on pyzmq sockets (see _accel.py).",
    -1,
    accel_methods,
};

PyMODINIT_FUNC
PyInit__accel_c(void)
{
    underlying_name = PyUnicode_InternFromString("underlying");
    if (underlying_name == NULL) {
        return NULL;
    }
    return PyModule_Create(&accel_module);
}
