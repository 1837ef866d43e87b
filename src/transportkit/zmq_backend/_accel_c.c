/*
 * transportkit.zmq_backend._accel: whole-message send and receive for the zmq
 * sockets, in one call each, and a wait for readiness.
 *
 * Why: pyzmq's receive returns one frame, and asking libzmq whether more frames
 * follow costs more than the receive itself (getsockopt(RCVMORE) goes through
 * pyzmq's option lookup). Here a receive takes every frame of a message and asks
 * zmq_msg_more() in C, so a multipart-correct receive costs what pyzmq's
 * single-frame receive costs.
 *
 * How: plain CPython C API. libzmq is not linked: _accel.py finds the libzmq that
 * pyzmq itself loaded and passes the addresses of the few functions used to init().
 * Sockets are pyzmq sockets; their handle is read from `underlying`, which pyzmq
 * sets to 0 when the socket is closed (by us, by Context.destroy or by the garbage
 * collector) and never sets to another socket's handle.
 *
 * Memory safety: whenever control went back to Python during a call (signal
 * handlers run after EINTR, or the GIL was released and another thread ran), the
 * socket may have been closed meanwhile, and a new socket may have been made at the
 * same address. So before the handle is used again, it is read again from the same
 * Python object (still_open): 0, or anything but the handle in use, raises ENOTSOCK
 * (a closed socket's error), and the freed handle is never touched. Comparing the
 * old pointer with nothing else would not do: a new socket can reuse the address.
 *
 * Multipart: libzmq delivers and accepts messages whole. Once the first frame is
 * received, the other frames are already there; once the first is accepted for
 * sending, the others never wait. So only the first frame's call may wait (and run
 * signal handlers); the others are made with ZMQ_DONTWAIT, holding the GIL (but
 * around the copy of a large frame sent), retried at once after EINTR without
 * running Python's signal handlers, which run when the call returns. A handler that
 * raises therefore never splits a message: a receive never leaves the rest of a
 * message to be read as a new one, a send never leaves a message unterminated for
 * the next send to be glued onto. Received frames are kept as libzmq messages until
 * the last one is in, so no Python code (not even the garbage collector) runs
 * between the frames.
 *
 * Errors: a libzmq error calls error_factory(errno) (zmq.Again, zmq.ZMQError...) and
 * raises what it returns. A message that is not a sequence of C-contiguous buffers
 * raises TypeError/ValueError/BufferError before anything is sent (the rules of
 * transportkit._socket.check_frames, which words the error the caller reports).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#ifdef _WIN32
#include <windows.h>
#else
#include <time.h>
#endif

/* libzmq's ABI (zmq.h, 4.x): an opaque 64-byte message, pointer-aligned. */
typedef union {
    unsigned char bytes[64];
    void *align_pointer;
    double align_double;
} zmq_msg_t;

/* zmq.h's zmq_pollitem_t: the fd is a SOCKET on Windows, an int elsewhere. */
typedef struct {
    void *socket;
#ifdef _WIN32
    uintptr_t fd;
#else
    int fd;
#endif
    short events;
    short revents;
} zmq_pollitem_t;

#define ZMQ_DONTWAIT 1
#define ZMQ_SNDMORE 2
#define ZMQ_POLLIN 1
#define ZMQ_POLLOUT 2

static int (*zmq_msg_init_p)(zmq_msg_t *);
static int (*zmq_msg_recv_p)(zmq_msg_t *, void *, int);
static void *(*zmq_msg_data_p)(zmq_msg_t *);
static size_t (*zmq_msg_size_p)(const zmq_msg_t *);
static int (*zmq_msg_more_p)(const zmq_msg_t *);
static int (*zmq_msg_close_p)(zmq_msg_t *);
static int (*zmq_send_p)(void *, const void *, size_t, int);
static int (*zmq_poll_p)(zmq_pollitem_t *, int, long);
static int (*zmq_errno_p)(void);

static PyObject *error_factory; /* callable(errno) -> exception instance */
static PyObject *sequence_abc;  /* collections.abc.Sequence */
static PyObject *underlying_name; /* interned "underlying" */
static int initialized;

/* A frame sent after the first is copied without the GIL from this size up. */
#define RELEASE_GIL_FROM 65536
/* Frames of a message handled on the stack; longer messages use the heap. */
#define STACK_FRAMES 8

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

/* The handle in `underlying` (NULL for a closed socket); -1 with an exception set if
 * it cannot be read. */
static int
read_handle(PyObject *sock, void **handle)
{
    /* The generic lookup finds pyzmq's `underlying` property (a getter on its
     * compiled base class) at once. PyObject_GetAttr would go through the
     * __getattr__ hook of pyzmq's Python socket class (its option attributes), which
     * costs several hundred instructions even when the attribute exists: it was a
     * sixth of a three-frame send and receive. The full lookup stays as the fallback
     * for a socket class whose attribute lookup is its own. */
    PyObject *value = PyObject_GenericGetAttr(sock, underlying_name);
    if (value == NULL && PyErr_ExceptionMatches(PyExc_AttributeError)) {
        PyErr_Clear();
        value = PyObject_GetAttr(sock, underlying_name);
    }
    if (value == NULL) {
        return -1;
    }
    *handle = PyLong_AsVoidPtr(value);
    Py_DECREF(value);
    if (*handle == NULL && PyErr_Occurred()) {
        return -1;
    }
    return 0;
}

/* The libzmq socket of a pyzmq socket; NULL with an exception set if there is none. */
static void *
handle_of(PyObject *sock)
{
    void *handle;
    if (read_handle(sock, &handle) < 0) {
        return NULL;
    }
    if (handle == NULL) {
        raise_zmq_error(ENOTSOCK); /* closed: pyzmq zeroes the handle */
    }
    return handle;
}

/* Whether `sock` still has `handle`, read again from the same Python object: 0 if so,
 * else -1 with ENOTSOCK raised (it was closed while control was back in Python). */
static int
still_open(PyObject *sock, void *handle)
{
    void *now;
    if (read_handle(sock, &now) < 0) {
        return -1;
    }
    if (now != handle) {
        return raise_zmq_error(ENOTSOCK);
    }
    return 0;
}

/* After EINTR: run the signal handlers (Ctrl-C raises KeyboardInterrupt), which may
 * close the socket, then check that it is still open. */
static int
after_signal(PyObject *sock, void *handle)
{
    if (PyErr_CheckSignals() < 0) {
        return -1;
    }
    return still_open(sock, handle);
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

/* One frame to move: received into `msg`, or (msg NULL) sent from data/size. */
typedef struct {
    zmq_msg_t *msg;
    const void *data;
    size_t size;
} frame_op;

static inline int
zmq_call(const frame_op *op, void *handle, int flags)
{
    if (op->msg != NULL) {
        return zmq_msg_recv_p(op->msg, handle, flags);
    }
    return zmq_send_p(handle, op->data, op->size, flags);
}

/*
 * The first frame of a message: the one call that may wait, made with the GIL
 * released (so other threads run while it waits, as with pyzmq). With try_first, it
 * is first tried without waiting while holding the GIL: a message already queued then
 * costs no GIL release and re-acquisition; only if it would wait is it made again
 * with the GIL released. A failed non-blocking attempt has no effect, so the result
 * is the waiting call's. A call the caller made non-blocking (ZMQ_DONTWAIT) always
 * releases the GIL: a busy-polling loop of them would otherwise hold it for Python's
 * whole switch interval (5 ms) and starve a peer thread in the same process.
 * Receives try first; sends do not: a send that keeps the GIL delays the thread it
 * just woke (an inproc peer in this process), which measurably worsened the P99 of
 * inproc round trips.
 * EINTR runs the signal handlers, then checks the socket is still open before the
 * call is made again. *released is set when the GIL was released: the caller must
 * then call still_open before it uses the handle again.
 * Returns 0, or -1 with an exception set.
 */
static int
first_frame(PyObject *sock, void *handle, const frame_op *op, int flags, int try_first,
            int *released)
{
    int rc, err;
    if (try_first && !(flags & ZMQ_DONTWAIT)) {
        rc = zmq_call(op, handle, flags | ZMQ_DONTWAIT);
        if (rc >= 0) {
            return 0;
        }
        err = zmq_errno_p();
        if (err == EINTR) {
            if (after_signal(sock, handle) < 0) {
                return -1;
            }
        }
        else if (err != EAGAIN) {
            return raise_zmq_error(err);
        }
    }
    for (;;) {
        Py_BEGIN_ALLOW_THREADS
        rc = zmq_call(op, handle, flags);
        err = rc < 0 ? zmq_errno_p() : 0;
        Py_END_ALLOW_THREADS
        *released = 1;
        if (rc >= 0) {
            return 0;
        }
        if (err != EINTR) {
            return raise_zmq_error(err);
        }
        if (after_signal(sock, handle) < 0) {
            return -1;
        }
    }
}

/* A frame after the first (see the top of this file): never waits, never runs signal
 * handlers. The GIL is released only with `release` (then the caller checks
 * still_open before the next use of the handle). Returns 0 or libzmq's errno. */
static int
next_frame(const frame_op *op, void *handle, int flags, int release)
{
    int rc, err;
    do {
        if (release) {
            Py_BEGIN_ALLOW_THREADS
            rc = zmq_call(op, handle, flags | ZMQ_DONTWAIT);
            err = rc < 0 ? zmq_errno_p() : 0;
            Py_END_ALLOW_THREADS
        }
        else {
            rc = zmq_call(op, handle, flags | ZMQ_DONTWAIT);
            err = rc < 0 ? zmq_errno_p() : 0;
        }
    } while (rc < 0 && err == EINTR);
    return rc < 0 ? err : 0;
}

/* Receive and drop what is left of a message whose first frames were taken (when
 * keeping them failed), so that it is not read as a new message. */
static void
discard_rest(void *handle)
{
    zmq_msg_t msg;
    frame_op op = {&msg, NULL, 0};
    int more = 1;
    while (more) {
        zmq_msg_init_p(&msg);
        if (next_frame(&op, handle, 0, 0) != 0) {
            more = 0;
        }
        else {
            more = zmq_msg_more_p(&msg);
        }
        zmq_msg_close_p(&msg);
    }
}

PyDoc_STRVAR(recv_message_doc,
"recv_message(sock, flags=0, /) -> list[bytes]\n\n"
"Receive every frame of one message from a pyzmq socket. Only the wait for the\n"
"first frame runs signal handlers; a handler that raises there takes nothing.\n"
"If the socket is closed meanwhile (by a handler, or by another thread while the\n"
"GIL was released), ENOTSOCK is raised and the freed socket is never touched.");

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
    PyObject *sock = args[0];
    void *handle = handle_of(sock);
    if (handle == NULL) {
        return NULL;
    }
    zmq_msg_t stack_msgs[STACK_FRAMES];
    zmq_msg_t *msgs = stack_msgs;
    Py_ssize_t capacity = STACK_FRAMES, count = 0;
    PyObject *frames = NULL;
    int released = 0;
    frame_op op = {&msgs[0], NULL, 0};
    zmq_msg_init_p(&msgs[0]);
    if (first_frame(sock, handle, &op, flags, 1, &released) < 0) {
        zmq_msg_close_p(&msgs[0]);
        return NULL;
    }
    count = 1;
    if (zmq_msg_more_p(&msgs[0])) {
        if (released && still_open(sock, handle) < 0) {
            goto done;
        }
        do {
            if (count == capacity) {
                zmq_msg_t *bigger = NULL;
                if (capacity <= PY_SSIZE_T_MAX / 2 / (Py_ssize_t)sizeof(zmq_msg_t)) {
                    bigger = PyMem_Malloc((size_t)capacity * 2 * sizeof(zmq_msg_t));
                }
                if (bigger == NULL) {
                    PyErr_NoMemory();
                    discard_rest(handle);
                    goto done;
                }
                /* A zmq_msg_t may be moved by copying its bytes (zmq_msg_move does). */
                memcpy(bigger, msgs, (size_t)count * sizeof(zmq_msg_t));
                if (msgs != stack_msgs) {
                    PyMem_Free(msgs);
                }
                msgs = bigger;
                capacity *= 2;
            }
            op.msg = &msgs[count];
            zmq_msg_init_p(op.msg);
            int err = next_frame(&op, handle, 0, 0);
            if (err != 0) {
                /* Only when the socket or its context is torn down. */
                zmq_msg_close_p(op.msg);
                raise_zmq_error(err);
                goto done;
            }
            count++;
        } while (zmq_msg_more_p(&msgs[count - 1]));
    }
    /* Every frame is in: from here on nothing touches the socket. */
    frames = PyList_New(count);
    if (frames != NULL) {
        for (Py_ssize_t i = 0; i < count; i++) {
            PyObject *frame = PyBytes_FromStringAndSize(
                (const char *)zmq_msg_data_p(&msgs[i]), (Py_ssize_t)zmq_msg_size_p(&msgs[i]));
            if (frame == NULL) {
                Py_CLEAR(frames);
                break;
            }
            PyList_SET_ITEM(frames, i, frame);
        }
    }
done:
    for (Py_ssize_t i = 0; i < count; i++) {
        zmq_msg_close_p(&msgs[i]);
    }
    if (msgs != stack_msgs) {
        PyMem_Free(msgs);
    }
    return frames;
}

/*
 * The frames of an outgoing message as a new tuple, or NULL with TypeError or
 * ValueError: the rules of transportkit._socket.check_frames (a Sequence, not a str
 * or a single buffer; its len() agrees with its items). A list or a tuple passes at
 * once. A tuple owns its items, so no other thread can free a frame while the GIL
 * is released during a send (a list could be changed meanwhile).
 */
static PyObject *
message_tuple(PyObject *message)
{
    if (PyList_CheckExact(message)) {
        return PyList_AsTuple(message);
    }
    if (PyTuple_CheckExact(message)) {
        Py_INCREF(message);
        return message;
    }
    if (PyUnicode_Check(message) || PyObject_CheckBuffer(message)) {
        PyErr_Format(PyExc_TypeError,
                     "a message is a sequence of frames, got a single %.100s",
                     Py_TYPE(message)->tp_name);
        return NULL;
    }
    int is_sequence = PyObject_IsInstance(message, sequence_abc);
    if (is_sequence < 0) {
        return NULL;
    }
    if (!is_sequence) {
        PyErr_Format(PyExc_TypeError, "a message is a sequence of frames, got %.100s",
                     Py_TYPE(message)->tp_name);
        return NULL;
    }
    Py_ssize_t declared = PyObject_Size(message);
    if (declared < 0) {
        return NULL;
    }
    PyObject *frames = PySequence_Tuple(message);
    if (frames != NULL && PyTuple_GET_SIZE(frames) != declared) {
        PyErr_Format(PyExc_ValueError,
                     "the message's len() is %zd but iterating it gives %zd frames",
                     declared, PyTuple_GET_SIZE(frames));
        Py_CLEAR(frames);
    }
    return frames;
}

/* Frames 1.. of a message whose first frame libzmq accepted. libzmq refuses one
 * (EAGAIN) only when the peer's pipe is torn down in the middle of the message, and
 * then drops the message: the rest is still sent, so that the message is ended in
 * libzmq and the next one is not taken as its tail. Returns 0, or -1 with an error
 * raised (the first one) if the last frame could not be handed over. */
static int
send_rest(PyObject *sock, void *handle, const Py_buffer *views, Py_ssize_t count,
          int released)
{
    int first_err = 0, err = 0;
    for (Py_ssize_t i = 1; i < count; i++) {
        if (released && still_open(sock, handle) < 0) {
            return -1;
        }
        frame_op op = {NULL, views[i].buf, (size_t)views[i].len};
        released = views[i].len >= RELEASE_GIL_FROM;
        err = next_frame(&op, handle, i < count - 1 ? ZMQ_SNDMORE : 0, released);
        if (err == 0) {
            continue;
        }
        if (err != EAGAIN) {
            return raise_zmq_error(err);
        }
        if (first_err == 0) {
            first_err = err;
        }
    }
    if (err != 0) {
        return raise_zmq_error(first_err);
    }
    return 0;
}

PyDoc_STRVAR(send_message_doc,
"send_message(sock, frames, flags=0, /) -> None\n\n"
"Send a sequence of C-contiguous buffers as one message (copying each). Every frame\n"
"is checked before the first is sent; only the wait to send the first frame runs\n"
"signal handlers, so a message is sent whole or not at all.");

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
    PyObject *frames = message_tuple(args[1]);
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
            /* PyBUF_SIMPLE: C-contiguous memory only (a strided view or a
             * Fortran-ordered array is refused, not reordered). */
            rc = -1;
            break;
        }
    }
    /* The handle is read after every call into Python code (iterating the message,
     * exporting buffers), and used at once. */
    void *handle = NULL;
    if (rc == 0) {
        handle = handle_of(args[0]);
        rc = handle == NULL ? -1 : 0;
    }
    if (rc == 0) {
        int released = 0;
        frame_op op = {NULL, views[0].buf, (size_t)views[0].len};
        rc = first_frame(args[0], handle, &op, flags | (count > 1 ? ZMQ_SNDMORE : 0), 0,
                         &released);
        if (rc == 0 && count > 1) {
            rc = send_rest(args[0], handle, views, count, released);
        }
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

/* A monotonic clock in milliseconds. */
static long long
now_ms(void)
{
#ifdef _WIN32
    return (long long)GetTickCount64();
#else
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
#endif
}

PyDoc_STRVAR(wait_doc,
"wait(sock, events, timeout_ms, /) -> bool\n\n"
"Wait until a pyzmq socket is ready for events (ZMQ_POLLIN and/or ZMQ_POLLOUT),\n"
"for at most timeout_ms milliseconds (-1: for ever); False if it timed out. Takes\n"
"nothing. Signal handlers run while it waits; if one closes the socket, ENOTSOCK\n"
"is raised (pyzmq's own poll would poll the freed socket again).");

static PyObject *
wait_ready(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    REQUIRE_INIT();
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "wait(sock, events, timeout_ms)");
        return NULL;
    }
    long events = PyLong_AsLong(args[1]);
    if (events == -1 && PyErr_Occurred()) {
        return NULL;
    }
    long long timeout = PyLong_AsLongLong(args[2]);
    if (timeout == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (timeout < 0) {
        timeout = -1;
    }
    else if (timeout > LONG_MAX) {
        timeout = LONG_MAX;
    }
    PyObject *sock = args[0];
    void *handle = handle_of(sock);
    if (handle == NULL) {
        return NULL;
    }
    long long deadline = timeout < 0 ? 0 : now_ms() + timeout;
    for (;;) {
        zmq_pollitem_t item = {handle, 0, (short)events, 0};
        int rc, err;
        Py_BEGIN_ALLOW_THREADS
        rc = zmq_poll_p(&item, 1, (long)timeout);
        err = rc < 0 ? zmq_errno_p() : 0;
        Py_END_ALLOW_THREADS
        if (rc >= 0) {
            return PyBool_FromLong(rc > 0 && (item.revents & events) != 0);
        }
        if (err != EINTR) {
            raise_zmq_error(err);
            return NULL;
        }
        if (after_signal(sock, handle) < 0) {
            return NULL;
        }
        if (timeout >= 0) {
            timeout = deadline - now_ms();
            if (timeout < 0) {
                timeout = 0;
            }
        }
    }
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
"init(addresses, error_factory, sequence, /) -> None\n\n"
"addresses maps zmq_msg_init, zmq_msg_recv, zmq_msg_data, zmq_msg_size, zmq_msg_more,\n"
"zmq_msg_close, zmq_send, zmq_poll and zmq_errno to their addresses in pyzmq's\n"
"libzmq; error_factory(errno) returns the exception to raise for a libzmq error;\n"
"sequence is collections.abc.Sequence (what a message must be).");

static PyObject *
init(PyObject *module, PyObject *args)
{
    PyObject *addresses, *factory, *sequence;
    if (!PyArg_ParseTuple(args, "O!OO:init", &PyDict_Type, &addresses, &factory, &sequence)) {
        return NULL;
    }
    if (!PyCallable_Check(factory)) {
        PyErr_SetString(PyExc_TypeError, "error_factory must be callable");
        return NULL;
    }
    if (!PyType_Check(sequence)) {
        PyErr_SetString(PyExc_TypeError, "sequence must be a class");
        return NULL;
    }
    static const char *names[] = {
        "zmq_msg_init", "zmq_msg_recv", "zmq_msg_data", "zmq_msg_size", "zmq_msg_more",
        "zmq_msg_close", "zmq_send", "zmq_poll", "zmq_errno",
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
    *(void **)&zmq_poll_p = found[7];
    *(void **)&zmq_errno_p = found[8];
    Py_INCREF(factory);
    Py_XSETREF(error_factory, factory);
    Py_INCREF(sequence);
    Py_XSETREF(sequence_abc, sequence);
    initialized = 1;
    Py_RETURN_NONE;
}

static PyMethodDef accel_methods[] = {
    {"init", (PyCFunction)init, METH_VARARGS, init_doc},
    {"recv_message", (PyCFunction)(void (*)(void))recv_message, METH_FASTCALL,
     recv_message_doc},
    {"send_message", (PyCFunction)(void (*)(void))send_message, METH_FASTCALL,
     send_message_doc},
    {"wait", (PyCFunction)(void (*)(void))wait_ready, METH_FASTCALL, wait_doc},
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
