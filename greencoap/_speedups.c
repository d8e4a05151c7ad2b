/* greencoap._speedups: the CoAP codec's hot path in C (RFC 7252 section 3).
 *
 * decode(data, cls=Message) and encode(msg) behave exactly as the pure
 * Python decode_py/encode_py in greencoap/message.py: the same Message
 * fields, the same MessageFormatError messages.  Whatever this file does not
 * handle itself (an options list out of order, values that are not bytes,
 * fields that are not ints) it hands to encode_py, so the two paths
 * cannot drift apart on the rare cases.  tests/test_speedups.py checks
 * both paths against each other with hypothesis.
 *
 * DedupEntry is greencoap.protocol.dedup.DedupEntry's twin: the same fields,
 * but made without a Python __init__ and not tracked by the cycle collector
 * (it only ever holds bytes), which matters at one entry per request.
 *
 * split_batch() turns the io_uring hub's received records into per-socket
 * batches (see greencoap/uring_hub.py: split_batch_py is its twin).
 *
 * respond() is MessageLayer.respond's common case (a response piggybacked
 * on the ACK, or a NON; MessageLayer.respond_py is its twin), and
 * receive_request() MessageLayer.receive's (a request; receive_py);
 * amplifies() and plain_path() are the Echo check's and the server
 * pipeline's (echo.EchoVerifier.amplifies_py, pipeline.plain_path_py).
 *
 * configure() is called once by greencoap/message.py with the tables the
 * codec needs (message types, codes, option length bounds, the error class,
 * the Message class and the Python encoder).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>

static PyObject *g_types;      /* tuple of 4 Type members */
static PyObject *g_codes;      /* tuple of 256 code objects */
static PyObject *g_error;      /* MessageFormatError */
static PyObject *g_message;    /* the Message class (decode's default cls) */
static PyObject *g_encode_py;  /* the pure Python encoder, for the rare cases */
static PyObject *g_empty_tuple;

/* option length bounds for numbers 0..g_nbounds-1; lo > hi: no bounds */
static unsigned short *g_lo, *g_hi;
static Py_ssize_t g_nbounds;

static PyObject *s_mtype, *s_code, *s_mid, *s_token, *s_options, *s_payload, *s_bad;

static PyObject *fail(const char *fmt, ...)
{
    va_list va;
    va_start(va, fmt);
    PyObject *msg = PyUnicode_FromFormatV(fmt, va);
    va_end(va);
    if (msg != NULL) {
        PyErr_SetObject(g_error, msg);
        Py_DECREF(msg);
    }
    return NULL;
}

static PyObject *configure(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *types, *codes, *bounds, *error, *message, *encode_py;
    if (!PyArg_ParseTuple(args, "O!O!O!OOO", &PyTuple_Type, &types, &PyTuple_Type, &codes,
                          &PyDict_Type, &bounds, &error, &message, &encode_py))
        return NULL;
    if (PyTuple_GET_SIZE(types) != 4 || PyTuple_GET_SIZE(codes) != 256) {
        PyErr_SetString(PyExc_ValueError, "configure: 4 types and 256 codes expected");
        return NULL;
    }
    Py_ssize_t top = 0, pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(bounds, &pos, &key, &value)) {
        long k = PyLong_AsLong(key);
        if (k < 0 || k > 65535) {
            PyErr_SetString(PyExc_ValueError, "configure: option numbers are 0..65535");
            return NULL;
        }
        if (k + 1 > top)
            top = k + 1;
    }
    unsigned short *lo = PyMem_Calloc(top ? top : 1, sizeof *lo);
    unsigned short *hi = PyMem_Calloc(top ? top : 1, sizeof *hi);
    if (lo == NULL || hi == NULL) {
        PyMem_Free(lo);
        PyMem_Free(hi);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < top; i++) {
        lo[i] = 1;
        hi[i] = 0;
    }
    pos = 0;
    while (PyDict_Next(bounds, &pos, &key, &value)) {
        long k = PyLong_AsLong(key);
        long a, b;
        if (!PyArg_ParseTuple(value, "ll", &a, &b) || a < 0 || b > 65535 || a > b) {
            PyMem_Free(lo);
            PyMem_Free(hi);
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "configure: bad option bounds");
            return NULL;
        }
        lo[k] = (unsigned short)a;
        hi[k] = (unsigned short)b;
    }
    PyMem_Free(g_lo);
    PyMem_Free(g_hi);
    g_lo = lo;
    g_hi = hi;
    g_nbounds = top;
    Py_INCREF(types);
    Py_XSETREF(g_types, types);
    Py_INCREF(codes);
    Py_XSETREF(g_codes, codes);
    Py_INCREF(error);
    Py_XSETREF(g_error, error);
    Py_INCREF(message);
    Py_XSETREF(g_message, message);
    Py_INCREF(encode_py);
    Py_XSETREF(g_encode_py, encode_py);
    Py_RETURN_NONE;
}

static int configured(void)
{
    if (g_types == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "greencoap._speedups is not configured");
        return 0;
    }
    return 1;
}

static inline int out_of_bounds(long number, Py_ssize_t length)
{
    if (number >= g_nbounds)
        return 0;
    unsigned short lo = g_lo[number], hi = g_hi[number];
    return lo <= hi && (length < lo || length > hi);
}

/* Set the seven fields of a new message; steals nothing. */
static int set_fields(PyObject *msg, PyObject *mtype, PyObject *code, PyObject *mid,
                      PyObject *token, PyObject *options, PyObject *payload, PyObject *bad)
{
    return PyObject_SetAttr(msg, s_mtype, mtype) < 0 || PyObject_SetAttr(msg, s_code, code) < 0 ||
                   PyObject_SetAttr(msg, s_mid, mid) < 0 ||
                   PyObject_SetAttr(msg, s_token, token) < 0 ||
                   PyObject_SetAttr(msg, s_options, options) < 0 ||
                   PyObject_SetAttr(msg, s_payload, payload) < 0 ||
                   PyObject_SetAttr(msg, s_bad, bad) < 0
               ? -1
               : 0;
}

/* The value of an option delta or length nibble 13 or 14 (RFC 7252 3.1):
 * its extended byte(s) at *pos, advanced past them; -1 with the error set
 * when they are cut off. */
static long extended(const unsigned char *data, Py_ssize_t *pos, Py_ssize_t n, long nibble,
                     const char *what)
{
    Py_ssize_t at = *pos;
    if (nibble == 13) {
        if (at >= n) {
            fail("truncated option: missing 1-byte extended %s", what);
            return -1;
        }
        *pos = at + 1;
        return data[at] + 13;
    }
    if (at + 2 > n) {
        fail("truncated option: missing 2-byte extended %s", what);
        return -1;
    }
    *pos = at + 2;
    return (data[at] << 8 | data[at + 1]) + 269;
}

static PyObject *decode_bytes(PyObject *bytes, PyObject *cls)
{
    const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(bytes);
    Py_ssize_t n = PyBytes_GET_SIZE(bytes);
    if (n < 4)
        return fail("message shorter than the 4-byte header");
    unsigned b0 = data[0];
    if ((b0 & 0xC0) != 0x40)
        return fail("version must be 1, not %u", b0 >> 6);
    unsigned tkl = b0 & 0x0F;
    if (tkl > 8)
        return fail("token length %u is reserved (TKL 9-15)", tkl);
    unsigned code = data[1];
    Py_ssize_t pos = 4 + tkl;
    if (pos > n)
        return fail("truncated token: TKL %u but %zd bytes after header", tkl, n - 4);
    if (code == 0 && n != 4)
        return fail("empty message must be exactly 4 bytes (no token, options or payload)");

    PyObject *options = PyList_New(0), *token = NULL, *payload = NULL, *bad = NULL;
    PyObject *mid = NULL, *msg = NULL;
    if (options == NULL)
        return NULL;
    token = PyBytes_FromStringAndSize((const char *)data + 4, (Py_ssize_t)tkl);
    if (token == NULL)
        goto error;
    long number = 0;
    while (pos < n) {
        unsigned b = data[pos++];
        if (b == 0xFF) {
            if (pos == n) {
                fail("payload marker 0xFF followed by no payload");
                goto error;
            }
            payload = PyBytes_FromStringAndSize((const char *)data + pos, n - pos);
            if (payload == NULL)
                goto error;
            break;
        }
        long delta = b >> 4;
        Py_ssize_t length = b & 0x0F;
        if (delta > 12) {
            if (delta == 15) {
                fail("option delta nibble 15 is reserved for the 0xFF marker");
                goto error;
            }
            if ((delta = extended(data, &pos, n, delta, "delta")) < 0)
                goto error;
            if (number + delta > 65535) {
                fail("option number %ld exceeds 65535", number + delta);
                goto error;
            }
        }
        if (length > 12) {
            if (length == 15) {
                fail("option length nibble 15 is reserved");
                goto error;
            }
            if ((length = extended(data, &pos, n, length, "length")) < 0)
                goto error;
        }
        number += delta;
        Py_ssize_t end = pos + length;
        if (end > n) {
            fail("truncated option: option %ld value of %zd bytes runs past the end", number,
                 length);
            goto error;
        }
        PyObject *num = PyLong_FromLong(number);
        PyObject *val = num ? PyBytes_FromStringAndSize((const char *)data + pos, length) : NULL;
        PyObject *item = val ? PyTuple_Pack(2, num, val) : NULL;
        Py_XDECREF(num);
        Py_XDECREF(val);
        if (item == NULL || PyList_Append(options, item) < 0) {
            Py_XDECREF(item);
            goto error;
        }
        Py_DECREF(item);
        pos = end;
        if (out_of_bounds(number, length)) {
            if (bad == NULL && (bad = PyList_New(0)) == NULL)
                goto error;
            PyObject *bn = PyLong_FromLong(number);
            if (bn == NULL || PyList_Append(bad, bn) < 0) {
                Py_XDECREF(bn);
                goto error;
            }
            Py_DECREF(bn);
        }
    }
    if (payload == NULL) {
        payload = PyBytes_FromStringAndSize(NULL, 0);
        if (payload == NULL)
            goto error;
    }
    PyObject *bad_tuple;
    if (bad != NULL) {
        bad_tuple = PyList_AsTuple(bad);
        Py_CLEAR(bad);
        if (bad_tuple == NULL)
            goto error;
    } else {
        bad_tuple = Py_NewRef(g_empty_tuple);
    }
    mid = PyLong_FromLong(data[2] << 8 | data[3]);
    if (mid == NULL) {
        Py_DECREF(bad_tuple);
        goto error;
    }
    PyTypeObject *type = (PyTypeObject *)cls;
    msg = type->tp_alloc(type, 0);
    if (msg == NULL || set_fields(msg, PyTuple_GET_ITEM(g_types, (b0 >> 4) & 3),
                                  PyTuple_GET_ITEM(g_codes, code), mid, token, options, payload,
                                  bad_tuple) < 0) {
        Py_DECREF(bad_tuple);
        goto error;
    }
    Py_DECREF(bad_tuple);
    Py_DECREF(mid);
    Py_DECREF(token);
    Py_DECREF(options);
    Py_DECREF(payload);
    return msg;
error:
    Py_XDECREF(msg);
    Py_XDECREF(mid);
    Py_XDECREF(bad);
    Py_XDECREF(token);
    Py_XDECREF(options);
    Py_XDECREF(payload);
    return NULL;
}

static PyObject *decode(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (!configured())
        return NULL;
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "decode(data, cls=Message)");
        return NULL;
    }
    PyObject *cls = nargs == 2 ? args[1] : g_message;
    if (!PyType_Check(cls) || !PyType_IsSubtype((PyTypeObject *)cls, (PyTypeObject *)g_message)) {
        PyErr_SetString(PyExc_TypeError, "decode: cls must be Message or a subclass");
        return NULL;
    }
    PyObject *data = args[0];
    if (PyBytes_CheckExact(data))
        return decode_bytes(data, cls);
    PyObject *copy = PyBytes_FromObject(data);
    if (copy == NULL)
        return NULL;
    PyObject *msg = decode_bytes(copy, cls);
    Py_DECREF(copy);
    return msg;
}

/* The option header bytes for delta/length into out; returns its size. */
static int option_header(unsigned char *out, long delta, Py_ssize_t length)
{
    int k = 1;
    unsigned dn, ln;
    unsigned char dext[2], lext[2];
    int dl = 0, ll = 0;
    if (delta < 13) {
        dn = (unsigned)delta;
    } else if (delta < 269) {
        dn = 13;
        dext[0] = (unsigned char)(delta - 13);
        dl = 1;
    } else {
        dn = 14;
        dext[0] = (unsigned char)((delta - 269) >> 8);
        dext[1] = (unsigned char)(delta - 269);
        dl = 2;
    }
    if (length < 13) {
        ln = (unsigned)length;
    } else if (length < 269) {
        ln = 13;
        lext[0] = (unsigned char)(length - 13);
        ll = 1;
    } else {
        ln = 14;
        lext[0] = (unsigned char)((length - 269) >> 8);
        lext[1] = (unsigned char)(length - 269);
        ll = 2;
    }
    out[0] = (unsigned char)(dn << 4 | ln);
    memcpy(out + k, dext, dl);
    k += dl;
    memcpy(out + k, lext, ll);
    return k + ll;
}

static PyObject *fallback(PyObject *msg)
{
    return PyObject_CallOneArg(g_encode_py, msg);
}

static PyObject *get_int(PyObject *msg, PyObject *name, long *out, int *plain)
{
    PyObject *v = PyObject_GetAttr(msg, name);
    if (v == NULL)
        return NULL;
    *plain = PyLong_Check(v);
    if (*plain) {
        int overflow;
        *out = PyLong_AsLongAndOverflow(v, &overflow);
        if (overflow)
            *plain = 0;
    }
    return v;
}

static PyObject *encode(PyObject *self, PyObject *msg)
{
    (void)self;
    if (!configured())
        return NULL;
    PyObject *token = NULL, *options = NULL, *payload = NULL, *code_o = NULL, *mtype_o = NULL,
             *mid_o = NULL, *result = NULL;
    long code, mtype, mid;
    int ok_code, ok_type, ok_mid;
    token = PyObject_GetAttr(msg, s_token);
    options = token ? PyObject_GetAttr(msg, s_options) : NULL;
    payload = options ? PyObject_GetAttr(msg, s_payload) : NULL;
    code_o = payload ? get_int(msg, s_code, &code, &ok_code) : NULL;
    mtype_o = code_o ? get_int(msg, s_mtype, &mtype, &ok_type) : NULL;
    mid_o = mtype_o ? get_int(msg, s_mid, &mid, &ok_mid) : NULL;
    if (mid_o == NULL)
        goto done;
    if (!PyBytes_CheckExact(token) || !PyList_Check(options) || !PyBytes_CheckExact(payload) ||
        !ok_code || !ok_type || !ok_mid) {
        result = fallback(msg);
        goto done;
    }
    Py_ssize_t tkl = PyBytes_GET_SIZE(token), plen = PyBytes_GET_SIZE(payload);
    Py_ssize_t nopt = PyList_GET_SIZE(options);
    if (tkl > 8) {
        fail("token longer than 8 bytes (%zd)", tkl);
        goto done;
    }
    if (code == 0 && (tkl || nopt || plen)) {
        fail("empty message must be exactly 4 bytes (no token, options or payload)");
        goto done;
    }
    if (mtype < 0 || mtype > 3) {
        fail("message type out of range 0..3: %ld", mtype);
        goto done;
    }
    if (code < 0 || code > 255 || mid < 0 || mid > 65535) {
        result = fallback(msg); /* the Python path words this error */
        goto done;
    }
    /* size and order check first: out of order or not (int, bytes) -> Python */
    Py_ssize_t size = 4 + tkl + (plen ? 1 + plen : 0);
    long prev = 0;
    for (Py_ssize_t i = 0; i < nopt; i++) {
        PyObject *item = PyList_GET_ITEM(options, i);
        if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 2 ||
            !PyLong_Check(PyTuple_GET_ITEM(item, 0)) ||
            !PyBytes_CheckExact(PyTuple_GET_ITEM(item, 1))) {
            result = fallback(msg);
            goto done;
        }
        int overflow;
        long number = PyLong_AsLongAndOverflow(PyTuple_GET_ITEM(item, 0), &overflow);
        if (overflow || number < prev) {
            result = fallback(msg);
            goto done;
        }
        Py_ssize_t length = PyBytes_GET_SIZE(PyTuple_GET_ITEM(item, 1));
        long delta = number - prev;
        if (delta >= 13 || length >= 13) {
            if (number > 65535) {
                fail("option number %ld exceeds 65535", number);
                goto done;
            }
            if (length >= 65805) {
                fail("option value of %zd bytes is too long to encode", length);
                goto done;
            }
        }
        size += 5 + length;
        prev = number;
    }
    unsigned char stackbuf[512];
    unsigned char *buf = size <= (Py_ssize_t)sizeof stackbuf ? stackbuf : PyMem_Malloc(size);
    if (buf == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    buf[0] = (unsigned char)(0x40 | mtype << 4 | tkl);
    buf[1] = (unsigned char)code;
    buf[2] = (unsigned char)(mid >> 8);
    buf[3] = (unsigned char)mid;
    Py_ssize_t at = 4;
    memcpy(buf + at, PyBytes_AS_STRING(token), tkl);
    at += tkl;
    prev = 0;
    for (Py_ssize_t i = 0; i < nopt; i++) {
        PyObject *item = PyList_GET_ITEM(options, i);
        long number = PyLong_AsLong(PyTuple_GET_ITEM(item, 0));
        PyObject *value = PyTuple_GET_ITEM(item, 1);
        Py_ssize_t length = PyBytes_GET_SIZE(value);
        at += option_header(buf + at, number - prev, length);
        memcpy(buf + at, PyBytes_AS_STRING(value), length);
        at += length;
        prev = number;
    }
    if (plen) {
        buf[at++] = 0xFF;
        memcpy(buf + at, PyBytes_AS_STRING(payload), plen);
        at += plen;
    }
    result = PyBytes_FromStringAndSize((const char *)buf, at);
    if (buf != stackbuf)
        PyMem_Free(buf);
done:
    Py_XDECREF(token);
    Py_XDECREF(options);
    Py_XDECREF(payload);
    Py_XDECREF(code_o);
    Py_XDECREF(mtype_o);
    Py_XDECREF(mid_o);
    return result;
}

/* -- DedupEntry ------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    PyObject *response; /* bytes or None */
    PyObject *token;    /* bytes */
    double expires;
    int dups;
    char running;
    char separated;
} DedupEntryObject;

static PyObject *entry_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"expires", "token", NULL};
    double expires;
    PyObject *token = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "d|O:DedupEntry", kwlist, &expires, &token))
        return NULL;
    DedupEntryObject *e = (DedupEntryObject *)type->tp_alloc(type, 0);
    if (e == NULL)
        return NULL;
    e->expires = expires;
    e->response = Py_NewRef(Py_None);
    if (token == NULL)
        token = PyBytes_FromStringAndSize(NULL, 0);
    else
        Py_INCREF(token);
    e->token = token;
    return (PyObject *)e;
}

static void entry_dealloc(DedupEntryObject *e)
{
    Py_XDECREF(e->response);
    Py_XDECREF(e->token);
    Py_TYPE(e)->tp_free((PyObject *)e);
}

static int entry_set_response(DedupEntryObject *e, PyObject *value, void *closure)
{
    (void)closure;
    if (value == NULL || (value != Py_None && !PyBytes_Check(value))) {
        PyErr_SetString(PyExc_TypeError, "response must be bytes or None");
        return -1;
    }
    Py_INCREF(value);
    Py_SETREF(e->response, value);
    return 0;
}

static PyObject *entry_get_response(DedupEntryObject *e, void *closure)
{
    (void)closure;
    return Py_NewRef(e->response);
}

static PyGetSetDef entry_getset[] = {
    {"response", (getter)entry_get_response, (setter)entry_set_response,
     "the answer sent (None until then)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef entry_members[] = {
    {"token", T_OBJECT_EX, offsetof(DedupEntryObject, token), READONLY,
     "the request's token (a copy with another token is a new request)"},
    {"expires", T_DOUBLE, offsetof(DedupEntryObject, expires), 0, "when the entry ends"},
    {"dups", T_INT, offsetof(DedupEntryObject, dups), 0, "copies that came while queued"},
    {"running", T_BOOL, offsetof(DedupEntryObject, running), 0, "being handled"},
    {"separated", T_BOOL, offsetof(DedupEntryObject, separated), 0,
     "answered with an empty ACK; the response goes as a CON"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject DedupEntryType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "greencoap._speedups.DedupEntry",
    .tp_basicsize = sizeof(DedupEntryObject),
    .tp_dealloc = (destructor)entry_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The record of one received CON/NON (see greencoap.protocol.dedup).",
    .tp_new = entry_new,
    .tp_members = entry_members,
    .tp_getset = entry_getset,
};

/* wire_size(msg): greencoap.protocol.echo.wire_size_py -- the encoded size
 * of a message (within a byte per long option) without encoding it: header,
 * token, each option's header with its extended bytes and its value, the
 * payload marker and the payload.  Anything unusual (an option that is not
 * an (int, bytes) pair) goes to the Python twin. */
static PyObject *g_wire_size_py;

static PyObject *wire_size(PyObject *self, PyObject *msg)
{
    (void)self;
    PyObject *token = NULL, *options = NULL, *payload = NULL, *result = NULL;
    if ((token = PyObject_GetAttr(msg, s_token)) == NULL ||
        (options = PyObject_GetAttr(msg, s_options)) == NULL ||
        (payload = PyObject_GetAttr(msg, s_payload)) == NULL)
        goto done;
    if (!PyBytes_Check(token) || !PyBytes_Check(payload) || !PyList_Check(options))
        goto python;
    Py_ssize_t n = 4 + PyBytes_GET_SIZE(token);
    long prev = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(options); i++) {
        PyObject *opt = PyList_GET_ITEM(options, i);
        if (!PyTuple_Check(opt) || PyTuple_GET_SIZE(opt) != 2 ||
            !PyLong_Check(PyTuple_GET_ITEM(opt, 0)) || !PyBytes_Check(PyTuple_GET_ITEM(opt, 1)))
            goto python;
        long number = PyLong_AsLong(PyTuple_GET_ITEM(opt, 0));
        if (number == -1 && PyErr_Occurred())
            goto done;
        Py_ssize_t length = PyBytes_GET_SIZE(PyTuple_GET_ITEM(opt, 1));
        long delta = number - prev;
        prev = number;
        n += 1 + length + (delta >= 13) + (delta >= 269) + (length >= 13) + (length >= 269);
    }
    if (PyBytes_GET_SIZE(payload))
        n += 1 + PyBytes_GET_SIZE(payload);
    result = PyLong_FromSsize_t(n);
    goto done;
python:
    if (g_wire_size_py == NULL) {
        PyObject *echo = PyImport_ImportModule("greencoap.protocol.echo");
        if (echo == NULL)
            goto done;
        g_wire_size_py = PyObject_GetAttrString(echo, "wire_size_py");
        Py_DECREF(echo);
        if (g_wire_size_py == NULL)
            goto done;
    }
    result = PyObject_CallOneArg(g_wire_size_py, msg);
done:
    Py_XDECREF(token);
    Py_XDECREF(options);
    Py_XDECREF(payload);
    return result;
}

/* amplifies(request, response, factor): EchoVerifier.amplifies_py -- is
 * response more than factor times the size of request?  (The request's size
 * is bounded from below first, without a pass over its options.) */
static Py_ssize_t length_of(PyObject *msg, PyObject *name)
{
    PyObject *v = PyObject_GetAttr(msg, name);
    if (v == NULL)
        return -1;
    Py_ssize_t n = PyObject_Length(v);
    Py_DECREF(v);
    return n;
}

static Py_ssize_t size_of(PyObject *msg)
{
    PyObject *n = wire_size(NULL, msg);
    if (n == NULL)
        return -1;
    Py_ssize_t size = PyLong_AsSsize_t(n);
    Py_DECREF(n);
    return size;
}

static PyObject *amplifies(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "amplifies(request, response, factor)");
        return NULL;
    }
    double factor = PyFloat_AsDouble(args[2]);
    if (factor == -1.0 && PyErr_Occurred())
        return NULL;
    Py_ssize_t size = size_of(args[1]);
    if (size < 0)
        return NULL;
    Py_ssize_t token = length_of(args[0], s_token), payload = length_of(args[0], s_payload);
    Py_ssize_t options = length_of(args[0], s_options);
    if (token < 0 || payload < 0 || options < 0)
        return NULL;
    if ((double)size <= factor * (double)(4 + token + payload + options))
        Py_RETURN_FALSE;
    Py_ssize_t request = size_of(args[0]);
    if (request < 0)
        return NULL;
    return PyBool_FromLong((double)size > factor * (double)request);
}

/* plain_path(msg): the raw Uri-Path values (a tuple) of a request whose
 * only options are Uri-Host, Uri-Port, Uri-Path, Uri-Query and
 * Content-Format, with no bad_options and Uri-Host / Uri-Port not
 * repeated; None for any other request (as pipeline.plain_path_py, which
 * takes options that are not (int, bytes) pairs). */
static PyObject *g_plain_path_py;

static PyObject *plain_path(PyObject *self, PyObject *msg)
{
    (void)self;
    PyObject *bad = PyObject_GetAttr(msg, s_bad);
    if (bad == NULL)
        return NULL;
    int any = PyObject_IsTrue(bad);
    Py_DECREF(bad);
    if (any < 0)
        return NULL;
    if (any)
        Py_RETURN_NONE;
    PyObject *options = PyObject_GetAttr(msg, s_options), *raw = NULL, *result = NULL;
    if (options == NULL)
        return NULL;
    if (!PyList_Check(options))
        goto python;
    if ((raw = PyList_New(0)) == NULL)
        goto done;
    long prev = -1;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(options); i++) {
        PyObject *opt = PyList_GET_ITEM(options, i);
        if (!PyTuple_Check(opt) || PyTuple_GET_SIZE(opt) != 2 ||
            !PyLong_Check(PyTuple_GET_ITEM(opt, 0)))
            goto python; /* (what was scanned so far is the twin's to redo) */
        long number = PyLong_AsLong(PyTuple_GET_ITEM(opt, 0));
        if (number == -1 && PyErr_Occurred())
            goto done;
        if (number == 11) {
            if (PyList_Append(raw, PyTuple_GET_ITEM(opt, 1)) < 0)
                goto done;
        } else if ((number != 3 && number != 7 && number != 12 && number != 15) ||
                   (number == prev && (number == 3 || number == 7))) {
            result = Py_NewRef(Py_None);
            goto done;
        }
        prev = number;
    }
    result = PyList_AsTuple(raw);
    goto done;
python:
    if (g_plain_path_py == NULL) {
        PyObject *mod = PyImport_ImportModule("greencoap.protocol.pipeline");
        if (mod == NULL)
            goto done;
        g_plain_path_py = PyObject_GetAttrString(mod, "plain_path_py");
        Py_DECREF(mod);
        if (g_plain_path_py == NULL)
            goto done;
    }
    result = PyObject_CallOneArg(g_plain_path_py, msg);
done:
    Py_DECREF(options);
    Py_XDECREF(raw);
    return result;
}

/* -- PeerStore and DedupCore: deduplication's hot path ----------------------
 *
 * greencoap/protocol/dedup.py keeps the algorithm; these are the C forms of
 * two of its parts, chosen there when this module is built:
 *
 * PeerStore is _PeerStorePy: one peer's two generations (dicts MID -> entry)
 * and their times, as plain C fields that Python reads and writes as
 * attributes.
 *
 * DedupCore is _DedupCorePy, DedupCache's base: the cache's scalar state as C
 * fields (the same attribute names) and the two calls made per request,
 * admit() and get().  admit() does the common case itself -- a copy of a
 * live entry, or a new entry into a current generation that needs neither
 * rotation nor room -- and hands every other case (a new peer, a reused
 * MID, a rotation, a full cache) to the Python method _admit_slow, which is
 * the whole algorithm.  tests/test_dedup.py runs on both.
 */
typedef struct {
    PyObject_HEAD
    PyObject *peer;
    PyObject *cur; /* dict */
    PyObject *old; /* dict */
    double born, last, old_last;
} PeerStoreObject;

static PyObject *store_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"peer", "now", NULL};
    PyObject *peer;
    double now;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "Od:PeerStore", kwlist, &peer, &now))
        return NULL;
    PeerStoreObject *st = (PeerStoreObject *)type->tp_alloc(type, 0);
    if (st == NULL)
        return NULL;
    st->peer = Py_NewRef(peer);
    st->cur = PyDict_New();
    st->old = PyDict_New();
    if (st->cur == NULL || st->old == NULL) {
        Py_DECREF(st);
        return NULL;
    }
    st->born = now;
    st->last = st->old_last = -Py_HUGE_VAL;
    return (PyObject *)st;
}

static int store_traverse(PeerStoreObject *st, visitproc visit, void *arg)
{
    Py_VISIT(st->peer);
    Py_VISIT(st->cur);
    Py_VISIT(st->old);
    return 0;
}

static int store_clear(PeerStoreObject *st)
{
    Py_CLEAR(st->peer);
    Py_CLEAR(st->cur);
    Py_CLEAR(st->old);
    return 0;
}

static void store_dealloc(PeerStoreObject *st)
{
    PyObject_GC_UnTrack(st);
    store_clear(st);
    Py_TYPE(st)->tp_free((PyObject *)st);
}

static Py_ssize_t store_len(PeerStoreObject *st)
{
    Py_ssize_t n = 0;
    if (st->cur != NULL && PyDict_Check(st->cur))
        n += PyDict_GET_SIZE(st->cur);
    if (st->old != NULL && PyDict_Check(st->old))
        n += PyDict_GET_SIZE(st->old);
    return n;
}

static PyMemberDef store_members[] = {
    {"peer", T_OBJECT_EX, offsetof(PeerStoreObject, peer), 0, "whose generations"},
    {"cur", T_OBJECT_EX, offsetof(PeerStoreObject, cur), 0, "the current generation"},
    {"old", T_OBJECT_EX, offsetof(PeerStoreObject, old), 0, "the previous generation"},
    {"born", T_DOUBLE, offsetof(PeerStoreObject, born), 0, "when cur started"},
    {"last", T_DOUBLE, offsetof(PeerStoreObject, last), 0, "the latest expiry held"},
    {"old_last", T_DOUBLE, offsetof(PeerStoreObject, old_last), 0, "the latest expiry in old"},
    {NULL, 0, 0, 0, NULL},
};

static PySequenceMethods store_as_sequence = {.sq_length = (lenfunc)store_len};

static PyTypeObject PeerStoreType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "greencoap._speedups.PeerStore",
    .tp_doc = "One peer's two deduplication generations (dedup._PeerStorePy in C).",
    .tp_basicsize = sizeof(PeerStoreObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = store_new,
    .tp_dealloc = (destructor)store_dealloc,
    .tp_traverse = (traverseproc)store_traverse,
    .tp_clear = (inquiry)store_clear,
    .tp_members = store_members,
    .tp_as_sequence = &store_as_sequence,
};

typedef struct {
    PyObject_HEAD
    PyObject *stores; /* dict peer -> PeerStore */
    Py_ssize_t size, capacity, half_share;
    double rotate_after, con_lifetime, non_lifetime, next_due;
} DedupCoreObject;

static PyObject *s_admit_slow;

static PyObject *core_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    (void)args;
    (void)kwds;
    DedupCoreObject *c = (DedupCoreObject *)type->tp_alloc(type, 0);
    if (c == NULL)
        return NULL;
    c->stores = PyDict_New();
    if (c->stores == NULL) {
        Py_DECREF(c);
        return NULL;
    }
    c->capacity = c->half_share = 1;
    c->next_due = Py_HUGE_VAL;
    return (PyObject *)c;
}

static int core_traverse(DedupCoreObject *c, visitproc visit, void *arg)
{
    Py_VISIT(c->stores); /* a Python subclass's own traverse visits its type and dict */
    return 0;
}

static int core_clear(DedupCoreObject *c)
{
    Py_CLEAR(c->stores);
    return 0;
}

static void core_dealloc(DedupCoreObject *c)
{
    PyObject_GC_UnTrack(c);
    core_clear(c);
    Py_TYPE(c)->tp_free((PyObject *)c); /* a Python subclass's dealloc releases its type */
}

/* The live entry of mid in store's generations (borrowed), or NULL (error set or not). */
static PyObject *store_entry(PeerStoreObject *st, PyObject *mid)
{
    PyObject *e = PyDict_GetItemWithError(st->cur, mid);
    if (e == NULL && !PyErr_Occurred())
        e = PyDict_GetItemWithError(st->old, mid);
    return e;
}

static PyObject *core_admit(DedupCoreObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 4 || nargs > 5) {
        PyErr_SetString(PyExc_TypeError, "admit(peer, mid, con, now, token=b'')");
        return NULL;
    }
    PyObject *peer = args[0], *mid = args[1];
    PyObject *token = nargs == 5 ? args[4] : NULL;
    double now = PyFloat_AsDouble(args[3]);
    if (now == -1.0 && PyErr_Occurred())
        return NULL;
    PyObject *stores = self->stores;
    if (token == NULL || !PyDict_CheckExact(stores) || !PyLong_CheckExact(mid))
        goto slow;
    PyObject *found = PyDict_GetItemWithError(stores, peer);
    if (found == NULL) {
        if (PyErr_Occurred())
            return NULL;
        goto slow; /* a new peer */
    }
    if (Py_TYPE(found) != &PeerStoreType)
        goto slow;
    PeerStoreObject *st = (PeerStoreObject *)found;
    if (!PyDict_CheckExact(st->cur) || !PyDict_CheckExact(st->old))
        goto slow;
    PyObject *e = store_entry(st, mid);
    if (e == NULL && PyErr_Occurred())
        return NULL;
    if (e != NULL) {
        if (Py_TYPE(e) != &DedupEntryType)
            goto slow;
        DedupEntryObject *entry = (DedupEntryObject *)e;
        if (entry->expires > now) {
            int same = PyObject_RichCompareBool(entry->token, token, Py_EQ);
            if (same < 0)
                return NULL;
            if (same)
                return Py_NewRef(e); /* a copy of a live message */
            goto slow;               /* a reused MID */
        }
    }
    if (self->size >= self->capacity || PyDict_GET_SIZE(st->cur) >= self->half_share ||
        now - st->born >= self->rotate_after)
        goto slow; /* a rotation, or room to make */
    int con = PyObject_IsTrue(args[2]);
    if (con < 0)
        return NULL;
    double expires = now + (con ? self->con_lifetime : self->non_lifetime);
    DedupEntryObject *fresh = (DedupEntryObject *)DedupEntryType.tp_alloc(&DedupEntryType, 0);
    if (fresh == NULL)
        return NULL;
    fresh->expires = expires;
    fresh->response = Py_NewRef(Py_None);
    fresh->token = Py_NewRef(token);
    Py_ssize_t before = PyDict_GET_SIZE(st->cur);
    int failed = PyDict_SetItem(st->cur, mid, (PyObject *)fresh);
    Py_DECREF(fresh);
    if (failed < 0)
        return NULL;
    self->size += PyDict_GET_SIZE(st->cur) - before;
    if (expires > st->last)
        st->last = expires;
    if (expires < self->next_due)
        self->next_due = expires;
    Py_RETURN_NONE;
slow:
    return PyObject_VectorcallMethod(
        s_admit_slow, (PyObject *[]){(PyObject *)self, args[0], args[1], args[2], args[3],
                                      nargs == 5 ? args[4] : NULL},
        (size_t)nargs + 1, NULL);
}

static PyObject *core_get(DedupCoreObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "get(peer, mid)");
        return NULL;
    }
    if (!PyDict_Check(self->stores))
        Py_RETURN_NONE;
    PyObject *found = PyDict_GetItemWithError(self->stores, args[0]);
    if (found == NULL) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    PyObject *e;
    if (Py_TYPE(found) == &PeerStoreType && PyDict_Check(((PeerStoreObject *)found)->cur) &&
        PyDict_Check(((PeerStoreObject *)found)->old)) {
        e = store_entry((PeerStoreObject *)found, args[1]);
    } else {
        PyErr_SetString(PyExc_TypeError, "DedupCore.get: a store that is not a PeerStore");
        return NULL;
    }
    if (e == NULL) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    return Py_NewRef(e);
}

static PyMethodDef core_methods[] = {
    {"admit", (PyCFunction)(void (*)(void))core_admit, METH_FASTCALL,
     "admit(peer, mid, con, now, token=b''): the entry mid is a copy of, or None (new)"},
    {"get", (PyCFunction)(void (*)(void))core_get, METH_FASTCALL,
     "get(peer, mid): the entry of (peer, mid) still held, or None"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef core_members[] = {
    {"_stores", T_OBJECT_EX, offsetof(DedupCoreObject, stores), 0, "peer -> its store"},
    {"_size", T_PYSSIZET, offsetof(DedupCoreObject, size), 0, "entries held"},
    {"capacity", T_PYSSIZET, offsetof(DedupCoreObject, capacity), 0, "the most entries"},
    {"half_share", T_PYSSIZET, offsetof(DedupCoreObject, half_share), 0,
     "a peer's cur rotates at this many entries"},
    {"rotate_after", T_DOUBLE, offsetof(DedupCoreObject, rotate_after), 0,
     "a generation rotates at this age"},
    {"con_lifetime", T_DOUBLE, offsetof(DedupCoreObject, con_lifetime), 0, "EXCHANGE_LIFETIME"},
    {"non_lifetime", T_DOUBLE, offsetof(DedupCoreObject, non_lifetime), 0, "NON_LIFETIME"},
    {"next_due", T_DOUBLE, offsetof(DedupCoreObject, next_due), 0,
     "when expire() next has something to do"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject DedupCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "greencoap._speedups.DedupCore",
    .tp_doc = "DedupCache's hot path in C (see greencoap/protocol/dedup.py).",
    .tp_basicsize = sizeof(DedupCoreObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = core_new,
    .tp_dealloc = (destructor)core_dealloc,
    .tp_traverse = (traverseproc)core_traverse,
    .tp_clear = (inquiry)core_clear,
    .tp_methods = core_methods,
    .tp_members = core_members,
};

/* -- MessageLayer.respond's common case ----------------------------------- */

/* respond(core, outbox, request, peer, response, next_mid): what
 * MessageLayer.respond does for a request not acknowledged separately: the
 * response gets the request's token, and is piggybacked on the ACK (the
 * request's MID) for a CON, or a NON with next_mid(peer) for a NON; it is
 * encoded, (data, peer) goes to outbox -- once more for each duplicate that
 * came before -- and data is cached in the request's dedup entry.  Returns
 * data, or None having done nothing (an entry acknowledged separately, an
 * input of another type than usual): the Python path then does it all. */

static PyObject *respond(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError,
                        "respond(core, outbox, request, peer, response, next_mid)");
        return NULL;
    }
    PyObject *core = args[0], *outbox = args[1], *request = args[2], *peer = args[3];
    PyObject *response = args[4], *next_mid = args[5];
    if (!PyObject_TypeCheck(core, &DedupCoreType) || !PyList_CheckExact(outbox) ||
        g_types == NULL)
        Py_RETURN_NONE;
    PyObject *mid = NULL, *mtype = NULL, *token = NULL, *entry = NULL, *data = NULL;
    PyObject *out_mid = NULL, *result = NULL;
    if ((mid = PyObject_GetAttr(request, s_mid)) == NULL ||
        (mtype = PyObject_GetAttr(request, s_mtype)) == NULL ||
        (token = PyObject_GetAttr(request, s_token)) == NULL)
        goto done;
    entry = core_get((DedupCoreObject *)core, (PyObject *[]){peer, mid}, 2);
    if (entry == NULL)
        goto done;
    if (entry != Py_None &&
        (Py_TYPE(entry) != &DedupEntryType || ((DedupEntryObject *)entry)->separated)) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    long t = PyLong_Check(mtype) ? PyLong_AsLong(mtype) : -1;
    if (t == -1 && PyErr_Occurred())
        goto done;
    PyObject *reply_type;
    if (t == 0) { /* CON: piggybacked on the ACK */
        reply_type = PyTuple_GET_ITEM(g_types, 2);
        out_mid = Py_NewRef(mid);
    } else if (t == 1) { /* NON: a NON with a fresh MID */
        reply_type = PyTuple_GET_ITEM(g_types, 1);
        if ((out_mid = PyObject_CallOneArg(next_mid, peer)) == NULL)
            goto done;
    } else {
        result = Py_NewRef(Py_None);
        goto done;
    }
    if (PyObject_SetAttr(response, s_token, token) < 0 ||
        PyObject_SetAttr(response, s_mtype, reply_type) < 0 ||
        PyObject_SetAttr(response, s_mid, out_mid) < 0)
        goto done;
    if ((data = encode(NULL, response)) == NULL)
        goto done;
    int copies = entry == Py_None ? 0 : ((DedupEntryObject *)entry)->dups;
    PyObject *pair = PyTuple_Pack(2, data, peer);
    if (pair == NULL)
        goto done;
    int failed = 0;
    for (int i = 0; i <= copies && !failed; i++)
        failed = PyList_Append(outbox, pair) < 0;
    Py_DECREF(pair);
    if (failed)
        goto done;
    if (entry != Py_None)
        Py_XSETREF(((DedupEntryObject *)entry)->response, Py_NewRef(data));
    result = Py_NewRef(data);
done:
    Py_XDECREF(mid);
    Py_XDECREF(mtype);
    Py_XDECREF(token);
    Py_XDECREF(entry);
    Py_XDECREF(out_mid);
    Py_XDECREF(data);
    return result;
}

/* -- MessageLayer.receive's common server case ----------------------------- */

/* receive_request(core, data, peer, now, event_type): for a datagram whose
 * header says request (version 1, CON or NON, code 0.01-0.31) and which
 * decodes: it is admitted into core (DedupCore.admit); a new one gives
 * event_type((msg, peer)) (RequestReceived), a copy of one (msg, entry).
 * Anything else -- another kind of message, a datagram that does not decode,
 * an input of another type than usual -- gives None having done nothing:
 * MessageLayer.receive_py, the twin, takes it whole. */
static PyObject *receive_request(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "receive_request(core, data, peer, now, event_type)");
        return NULL;
    }
    PyObject *core = args[0], *data = args[1], *peer = args[2], *event_type = args[4];
    if (!configured())
        return NULL;
    if (!PyBytes_CheckExact(data) || !PyObject_TypeCheck(core, &DedupCoreType) ||
        !PyType_Check(event_type) ||
        !PyType_IsSubtype((PyTypeObject *)event_type, &PyTuple_Type))
        Py_RETURN_NONE;
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(data);
    if (PyBytes_GET_SIZE(data) < 4 || (p[0] & 0xC0) != 0x40 || ((p[0] >> 4) & 3) > 1 ||
        p[1] == 0 || p[1] >= 32)
        Py_RETURN_NONE; /* not a request in CON or NON */
    PyObject *msg = decode_bytes(data, g_message);
    if (msg == NULL) {
        if (!PyErr_ExceptionMatches(g_error))
            return NULL;
        PyErr_Clear(); /* malformed: the Python path counts it (and RSTs a CON) */
        Py_RETURN_NONE;
    }
    PyObject *mid = NULL, *token = NULL, *entry = NULL, *pair = NULL, *result = NULL;
    if ((mid = PyObject_GetAttr(msg, s_mid)) == NULL ||
        (token = PyObject_GetAttr(msg, s_token)) == NULL)
        goto done;
    PyObject *con = ((p[0] >> 4) & 3) == 0 ? Py_True : Py_False;
    entry = core_admit((DedupCoreObject *)core, (PyObject *[]){peer, mid, con, args[3], token}, 5);
    if (entry == NULL)
        goto done;
    if (entry == Py_None) {
        if ((pair = PyTuple_Pack(2, msg, peer)) == NULL)
            goto done;
        PyObject *targs = PyTuple_Pack(1, pair);
        if (targs == NULL)
            goto done;
        result = PyTuple_Type.tp_new((PyTypeObject *)event_type, targs, NULL);
        Py_DECREF(targs);
    } else {
        result = PyTuple_Pack(2, msg, entry);
    }
done:
    Py_DECREF(msg);
    Py_XDECREF(mid);
    Py_XDECREF(token);
    Py_XDECREF(entry);
    Py_XDECREF(pair);
    return result;
}

/* ---- the io_uring hub's receive batch ------------------------------------
 *
 * split_batch(arena, meta, n, addr_cache) -> (batches, misses) is
 * greencoap.uring_hub.split_batch_py: the n received records that gc_poll
 * described in meta (int32 fields slot, payload offset, payload length,
 * address offset, address length per record) over the bytes of arena become
 * {slot: [(payload, peer), ...]} in arrival order, each peer looked up in
 * addr_cache by its address record.  An address not in the cache stands in
 * as its raw bytes and is counted in misses (the caller converts those, it
 * happens once per new peer).  Consecutive records from one address (the
 * common case under load) share one lookup.
 */
static PyObject *split_batch(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 4 || !PyDict_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "split_batch(arena, meta, n, addr_cache: dict)");
        return NULL;
    }
    Py_ssize_t n = PyLong_AsSsize_t(args[2]);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    Py_buffer arena, meta;
    if (PyObject_GetBuffer(args[0], &arena, PyBUF_SIMPLE) < 0)
        return NULL;
    if (PyObject_GetBuffer(args[1], &meta, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&arena);
        return NULL;
    }
    PyObject *cache = args[3];
    PyObject *batches = NULL, *last_sa = NULL, *last_addr = NULL, *last_list = NULL;
    long last_slot = 0;
    Py_ssize_t misses = 0;
    if (n < 0 || (size_t)n * 5 * sizeof(int32_t) > (size_t)meta.len) {
        PyErr_SetString(PyExc_ValueError, "split_batch: meta is shorter than n records");
        goto error;
    }
    if ((batches = PyDict_New()) == NULL)
        goto error;
    const int32_t *m = (const int32_t *)meta.buf;
    const char *blob = (const char *)arena.buf;
    for (Py_ssize_t i = 0; i < n; i++, m += 5) {
        long slot = m[0];
        int32_t poff = m[1], plen = m[2], noff = m[3], nlen = m[4];
        if (poff < 0 || plen < 0 || noff < 0 || nlen < 0 ||
            (Py_ssize_t)poff + plen > arena.len || (Py_ssize_t)noff + nlen > arena.len) {
            PyErr_SetString(PyExc_ValueError, "split_batch: a record points outside the arena");
            goto error;
        }
        if (last_sa == NULL || PyBytes_GET_SIZE(last_sa) != nlen ||
            memcmp(PyBytes_AS_STRING(last_sa), blob + noff, (size_t)nlen) != 0) {
            PyObject *sa = PyBytes_FromStringAndSize(blob + noff, nlen);
            if (sa == NULL)
                goto error;
            PyObject *addr = PyDict_GetItemWithError(cache, sa);
            if (addr == NULL) {
                if (PyErr_Occurred()) {
                    Py_DECREF(sa);
                    goto error;
                }
                addr = sa; /* the raw record stands in: the caller converts it */
                misses++;
            }
            Py_INCREF(addr);
            Py_XDECREF(last_sa);
            Py_XDECREF(last_addr);
            last_sa = sa;
            last_addr = addr;
        } else if (last_addr == last_sa) {
            misses++; /* another record from the same unknown address */
        }
        if (last_list == NULL || slot != last_slot) {
            PyObject *key = PyLong_FromLong(slot);
            if (key == NULL)
                goto error;
            PyObject *list = PyDict_GetItemWithError(batches, key);
            if (list == NULL) {
                if (PyErr_Occurred() || (list = PyList_New(0)) == NULL ||
                    PyDict_SetItem(batches, key, list) < 0) {
                    Py_XDECREF(list);
                    Py_DECREF(key);
                    goto error;
                }
                Py_DECREF(list); /* the dict holds it */
            }
            Py_DECREF(key);
            last_list = list;
            last_slot = slot;
        }
        PyObject *payload = PyBytes_FromStringAndSize(blob + poff, plen);
        if (payload == NULL)
            goto error;
        PyObject *pair = PyTuple_New(2);
        if (pair == NULL) {
            Py_DECREF(payload);
            goto error;
        }
        Py_INCREF(last_addr);
        PyTuple_SET_ITEM(pair, 0, payload);
        PyTuple_SET_ITEM(pair, 1, last_addr);
        int failed = PyList_Append(last_list, pair);
        Py_DECREF(pair);
        if (failed < 0)
            goto error;
    }
    Py_XDECREF(last_sa);
    Py_XDECREF(last_addr);
    PyBuffer_Release(&arena);
    PyBuffer_Release(&meta);
    return Py_BuildValue("(Nn)", batches, misses);
error:
    Py_XDECREF(batches);
    Py_XDECREF(last_sa);
    Py_XDECREF(last_addr);
    PyBuffer_Release(&arena);
    PyBuffer_Release(&meta);
    return NULL;
}

static PyMethodDef methods[] = {
    {"configure", configure, METH_VARARGS,
     "configure(types, codes, bounds, error, message_cls, encode_py): the codec's tables"},
    {"decode", (PyCFunction)(void (*)(void))decode, METH_FASTCALL,
     "decode(data, cls=Message): parse one datagram strictly (as message.decode_py)"},
    {"encode", encode, METH_O, "encode(msg): the minimal datagram (as message.encode_py)"},
    {"wire_size", wire_size, METH_O, "wire_size(msg): the encoded size (as echo.wire_size_py)"},
    {"respond", (PyCFunction)(void (*)(void))respond, METH_FASTCALL,
     "respond(core, outbox, request, peer, response, next_mid): MessageLayer.respond's "
     "common case (as MessageLayer.respond_py), or None"},
    {"receive_request", (PyCFunction)(void (*)(void))receive_request, METH_FASTCALL,
     "receive_request(core, data, peer, now, event_type): MessageLayer.receive's common "
     "server case (as MessageLayer.receive_py), or None"},
    {"amplifies", (PyCFunction)(void (*)(void))amplifies, METH_FASTCALL,
     "amplifies(request, response, factor): as echo.EchoVerifier.amplifies_py"},
    {"plain_path", plain_path, METH_O,
     "plain_path(msg): a plain request's raw Uri-Path, or None (as pipeline.plain_path_py)"},
    {"split_batch", (PyCFunction)(void (*)(void))split_batch, METH_FASTCALL,
     "split_batch(arena, meta, n, addr_cache): the io_uring hub's received records by socket"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "greencoap._speedups",
    "The CoAP codec's hot path in C (see greencoap/message.py).", -1, methods, NULL, NULL, NULL,
    NULL,
};

PyMODINIT_FUNC PyInit__speedups(void)
{
    if ((s_mtype = PyUnicode_InternFromString("mtype")) == NULL ||
        (s_code = PyUnicode_InternFromString("code")) == NULL ||
        (s_mid = PyUnicode_InternFromString("mid")) == NULL ||
        (s_token = PyUnicode_InternFromString("token")) == NULL ||
        (s_options = PyUnicode_InternFromString("options")) == NULL ||
        (s_payload = PyUnicode_InternFromString("payload")) == NULL ||
        (s_bad = PyUnicode_InternFromString("bad_options")) == NULL ||
        (g_empty_tuple = PyTuple_New(0)) == NULL)
        return NULL;
    if ((s_admit_slow = PyUnicode_InternFromString("_admit_slow")) == NULL)
        return NULL;
    if (PyType_Ready(&DedupEntryType) < 0 || PyType_Ready(&PeerStoreType) < 0 ||
        PyType_Ready(&DedupCoreType) < 0)
        return NULL;
    PyObject *mod = PyModule_Create(&module);
    if (mod == NULL)
        return NULL;
    if (PyModule_AddObjectRef(mod, "DedupEntry", (PyObject *)&DedupEntryType) < 0 ||
        PyModule_AddObjectRef(mod, "PeerStore", (PyObject *)&PeerStoreType) < 0 ||
        PyModule_AddObjectRef(mod, "DedupCore", (PyObject *)&DedupCoreType) < 0) {
        Py_DECREF(mod);
        return NULL;
    }
    return mod;
}
