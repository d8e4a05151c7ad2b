/* greencoap._ccm: AES-128-CCM with an 8-byte tag and a 12-byte nonce, the
 * record protection of TLS_PSK_WITH_AES_128_CCM_8 (RFC 6655), on one OpenSSL
 * cipher context per direction that keeps its key schedule between records.
 *
 * Ccm8(key).encrypt(nonce, plaintext, aad) and .decrypt(nonce, data, aad)
 * behave as cryptography's AESCCM(key, tag_length=8) does for these sizes:
 * the same bytes out, cryptography.exceptions.InvalidTag when a record fails
 * authentication (tests/test_ccm.py checks both against it with hypothesis).
 * AESCCM sets up a fresh context per call (about 1-3 us here); this costs
 * a few hundred ns.  Optional: built when OpenSSL's headers are there; the
 * DTLS record layer falls back to AESCCM otherwise.  Not thread-safe: one
 * object belongs to one DTLS session, on one hub.
 *
 * RecordCipher(key, iv) is greencoap.protocol.dtls.record.RecordCipher's
 * twin: seal() and open() of whole DTLS 1.2 records (header, nonce and
 * additional data built here), one call per record instead of the Python
 * twin's struct packing, slicing and concatenation around the cipher.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <string.h>
#include <openssl/evp.h>

#define KEY_LEN 16
#define NONCE_LEN 12
#define TAG_LEN 8

static PyObject *InvalidTag; /* cryptography.exceptions.InvalidTag */

#define IV_LEN 4       /* the implicit part of a record's nonce (RFC 6655 §3) */
#define EXPLICIT_LEN 8 /* the explicit part: epoch << 48 | sequence number */
#define HEADER_LEN 13  /* type(1) version(2) epoch+seq(8) length(2) */
#define AAD_LEN 13     /* epoch+seq(8) type(1) version(2) plaintext length(2) */

/* A Ccm8 and a RecordCipher alike (a Ccm8 leaves iv unused). */
typedef struct {
    PyObject_HEAD
    EVP_CIPHER_CTX *enc;
    EVP_CIPHER_CTX *dec;
    unsigned char iv[IV_LEN];
} Ccm8;

static EVP_CIPHER_CTX *new_ctx(const unsigned char *key, int encrypting)
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    if (!c)
        return NULL;
    if (EVP_CipherInit_ex(c, EVP_aes_128_ccm(), NULL, NULL, NULL, encrypting) != 1 ||
        EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_IVLEN, NONCE_LEN, NULL) != 1 ||
        EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_TAG, TAG_LEN, NULL) != 1 ||
        EVP_CipherInit_ex(c, NULL, NULL, key, NULL, encrypting) != 1) {
        EVP_CIPHER_CTX_free(c);
        return NULL;
    }
    return c;
}

/* A new object of ``type`` under ``key`` (16 bytes); ``iv`` is copied when given. */
static PyObject *make(PyTypeObject *type, Py_buffer *key, const Py_buffer *iv)
{
    Ccm8 *self;
    if (key->len != KEY_LEN)
        return PyErr_Format(PyExc_ValueError, "an AES-128 key is 16 bytes, not %zd", key->len);
    if (iv && iv->len != IV_LEN)
        return PyErr_Format(PyExc_ValueError, "the implicit IV is 4 bytes, not %zd", iv->len);
    self = (Ccm8 *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    self->enc = new_ctx(key->buf, 1);
    self->dec = new_ctx(key->buf, 0);
    if (!self->enc || !self->dec) {
        Py_DECREF(self);
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL could not set up AES-128-CCM");
        return NULL;
    }
    if (iv)
        memcpy(self->iv, iv->buf, IV_LEN);
    return (PyObject *)self;
}

static PyObject *Ccm8_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    Py_buffer key;
    PyObject *self;
    static char *kwlist[] = {"key", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*:Ccm8", kwlist, &key))
        return NULL;
    self = make(type, &key, NULL);
    PyBuffer_Release(&key);
    return self;
}

static PyObject *Records_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    Py_buffer key, iv;
    PyObject *self;
    static char *kwlist[] = {"key", "iv", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*y*:RecordCipher", kwlist, &key, &iv))
        return NULL;
    self = make(type, &key, &iv);
    PyBuffer_Release(&key);
    PyBuffer_Release(&iv);
    return self;
}

/* Encrypt ``len`` bytes of ``in`` into ``out`` (``len`` + TAG_LEN bytes:
 * the ciphertext, then the tag).  0 on an OpenSSL failure (nothing set). */
static int seal_into(Ccm8 *self, const unsigned char *nonce, const unsigned char *aad, int aadlen,
                     const unsigned char *in, int len, unsigned char *out)
{
    int n;
    return EVP_EncryptInit_ex(self->enc, NULL, NULL, NULL, nonce) == 1 &&
           EVP_EncryptUpdate(self->enc, NULL, &n, NULL, len) == 1 &&
           (!aadlen || EVP_EncryptUpdate(self->enc, NULL, &n, aad, aadlen) == 1) &&
           EVP_EncryptUpdate(self->enc, out, &n, in, len) == 1 &&
           EVP_EncryptFinal_ex(self->enc, out + n, &n) == 1 &&
           EVP_CIPHER_CTX_ctrl(self->enc, EVP_CTRL_AEAD_GET_TAG, TAG_LEN, out + len) == 1;
}

/* Decrypt and authenticate ``len`` bytes of ``in`` followed by their tag
 * into ``out``.  0 when the record fails authentication.  The tag goes in
 * after the nonce (setting the nonce starts a new message); the data's own
 * update checks it. */
static int open_into(Ccm8 *self, const unsigned char *nonce, const unsigned char *aad, int aadlen,
                     const unsigned char *in, int len, unsigned char *out)
{
    int n;
    return EVP_DecryptInit_ex(self->dec, NULL, NULL, NULL, nonce) == 1 &&
           EVP_CIPHER_CTX_ctrl(self->dec, EVP_CTRL_AEAD_SET_TAG, TAG_LEN, (void *)(in + len)) == 1 &&
           EVP_DecryptUpdate(self->dec, NULL, &n, NULL, len) == 1 &&
           (!aadlen || EVP_DecryptUpdate(self->dec, NULL, &n, aad, aadlen) == 1) &&
           EVP_DecryptUpdate(self->dec, out, &n, in, len) == 1;
}

static void Ccm8_dealloc(Ccm8 *self)
{
    EVP_CIPHER_CTX_free(self->enc);
    EVP_CIPHER_CTX_free(self->dec);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The three arguments as buffers; 0 with an exception set on a bad one. */
static int get_args(PyObject *const *args, Py_ssize_t nargs, const char *name, Py_buffer *b)
{
    int i;
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "%s() takes nonce, data and associated_data", name);
        return 0;
    }
    for (i = 0; i < 3; i++) {
        if (PyObject_GetBuffer(args[i], &b[i], PyBUF_SIMPLE) < 0) {
            while (i--)
                PyBuffer_Release(&b[i]);
            return 0;
        }
    }
    if (b[0].len != NONCE_LEN || b[1].len > INT_MAX - TAG_LEN || b[2].len > INT_MAX) {
        if (b[0].len != NONCE_LEN)
            PyErr_Format(PyExc_ValueError, "the nonce is %d bytes, not %zd", NONCE_LEN, b[0].len);
        else
            PyErr_SetString(PyExc_OverflowError, "data too long");
        for (i = 0; i < 3; i++)
            PyBuffer_Release(&b[i]);
        return 0;
    }
    return 1;
}

static void release(Py_buffer *b)
{
    PyBuffer_Release(&b[0]);
    PyBuffer_Release(&b[1]);
    PyBuffer_Release(&b[2]);
}

static PyObject *Ccm8_encrypt(Ccm8 *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer b[3];
    PyObject *out;
    int len;
    if (!get_args(args, nargs, "encrypt", b))
        return NULL;
    len = (int)b[1].len;
    out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)len + TAG_LEN);
    if (out && !seal_into(self, b[0].buf, b[2].buf, (int)b[2].len, b[1].buf, len,
                          (unsigned char *)PyBytes_AS_STRING(out))) {
        Py_CLEAR(out);
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL failed to encrypt");
    }
    release(b);
    return out;
}

static PyObject *Ccm8_decrypt(Ccm8 *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer b[3];
    PyObject *out = NULL;
    int len;
    if (!get_args(args, nargs, "decrypt", b))
        return NULL;
    if (b[1].len < TAG_LEN) {
        PyErr_SetNone(InvalidTag);
    } else {
        len = (int)b[1].len - TAG_LEN;
        out = PyBytes_FromStringAndSize(NULL, len);
        if (out && !open_into(self, b[0].buf, b[2].buf, (int)b[2].len, b[1].buf, len,
                              (unsigned char *)PyBytes_AS_STRING(out))) {
            Py_CLEAR(out);
            PyErr_SetNone(InvalidTag);
        }
    }
    release(b);
    return out;
}

/* -- RecordCipher: whole DTLS 1.2 records (record.RecordCipher's twin) -- */

static void put_be(unsigned char *p, unsigned long long v, int n)
{
    while (n--) {
        p[n] = (unsigned char)v;
        v >>= 8;
    }
}

/* The additional data of RFC 5246 §6.2.3.3: es, type, version, length. */
static void put_aad(unsigned char *aad, unsigned long long es, int ctype, int version, int n)
{
    put_be(aad, es, 8);
    aad[8] = (unsigned char)ctype;
    put_be(aad + 9, (unsigned)version, 2);
    put_be(aad + 11, (unsigned)n, 2);
}

/* ctype, version (0..255, 0..0xFFFF; DTLS 1.2 when ``v`` is NULL) and es
 * (0..2**64-1) from Python ints; 0 with an exception set. */
static int get_fields(PyObject *c, PyObject *v, PyObject *e, int *ctype, int *version,
                      unsigned long long *es)
{
    long x = PyLong_AsLong(c), y = 0xFEFD;
    if (x == -1 && PyErr_Occurred())
        return 0;
    if (v && (y = PyLong_AsLong(v)) == -1 && PyErr_Occurred())
        return 0;
    if (x < 0 || x > 0xFF || y < 0 || y > 0xFFFF) {
        PyErr_SetString(PyExc_ValueError, "a content type is one byte and a version two");
        return 0;
    }
    *es = PyLong_AsUnsignedLongLong(e);
    if (*es == (unsigned long long)-1 && PyErr_Occurred())
        return 0;
    *ctype = (int)x;
    *version = (int)y;
    return 1;
}

static PyObject *Records_seal(Ccm8 *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer text;
    PyObject *out;
    unsigned char *o, nonce[NONCE_LEN], aad[AAD_LEN];
    unsigned long long es;
    int ctype, version, n;
    if (nargs != 3 && nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "seal() takes ctype, es, plaintext[, version]");
        return NULL;
    }
    if (!get_fields(args[0], nargs == 4 ? args[3] : NULL, args[1], &ctype, &version, &es))
        return NULL;
    if (PyObject_GetBuffer(args[2], &text, PyBUF_SIMPLE) < 0)
        return NULL;
    if (text.len > 0xFFFF - EXPLICIT_LEN - TAG_LEN) {
        PyBuffer_Release(&text);
        PyErr_SetString(PyExc_ValueError, "the plaintext does not fit in one record");
        return NULL;
    }
    n = (int)text.len;
    out = PyBytes_FromStringAndSize(NULL, HEADER_LEN + EXPLICIT_LEN + n + TAG_LEN);
    if (out) {
        o = (unsigned char *)PyBytes_AS_STRING(out);
        o[0] = (unsigned char)ctype;
        put_be(o + 1, (unsigned)version, 2);
        put_be(o + 3, es, 8);
        put_be(o + 11, (unsigned)(n + EXPLICIT_LEN + TAG_LEN), 2);
        memcpy(o + HEADER_LEN, o + 3, EXPLICIT_LEN);
        memcpy(nonce, self->iv, IV_LEN);
        memcpy(nonce + IV_LEN, o + 3, EXPLICIT_LEN);
        put_aad(aad, es, ctype, version, n);
        if (!seal_into(self, nonce, aad, AAD_LEN, text.buf, n, o + HEADER_LEN + EXPLICIT_LEN)) {
            Py_CLEAR(out);
            PyErr_SetString(PyExc_RuntimeError, "OpenSSL failed to encrypt");
        }
    }
    PyBuffer_Release(&text);
    return out;
}

static PyObject *Records_open(Ccm8 *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer frag;
    PyObject *out = NULL;
    unsigned char nonce[NONCE_LEN], aad[AAD_LEN];
    unsigned long long es;
    int ctype, version, n;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "open() takes ctype, version, es, fragment");
        return NULL;
    }
    if (!get_fields(args[0], args[1], args[2], &ctype, &version, &es))
        return NULL;
    if (PyObject_GetBuffer(args[3], &frag, PyBUF_SIMPLE) < 0)
        return NULL;
    if (frag.len < EXPLICIT_LEN + TAG_LEN || frag.len > INT_MAX) {
        PyBuffer_Release(&frag);
        Py_RETURN_NONE;
    }
    n = (int)frag.len - EXPLICIT_LEN - TAG_LEN;
    memcpy(nonce, self->iv, IV_LEN);
    memcpy(nonce + IV_LEN, frag.buf, EXPLICIT_LEN);
    put_aad(aad, es, ctype, version, n & 0xFFFF);
    out = PyBytes_FromStringAndSize(NULL, n);
    if (out && !open_into(self, nonce, aad, AAD_LEN, (unsigned char *)frag.buf + EXPLICIT_LEN, n,
                          (unsigned char *)PyBytes_AS_STRING(out))) {
        Py_DECREF(out);
        out = Py_NewRef(Py_None);
    }
    PyBuffer_Release(&frag);
    return out;
}

static PyObject *s_top, *s_bits; /* ReplayWindow's attribute names */

/* get_be: the n-byte big-endian number at p */
static unsigned long long get_be(const unsigned char *p, int n)
{
    unsigned long long v = 0;
    while (n--)
        v = v << 8 | *p++;
    return v;
}

/* open_record(datagram, epoch, window): record.RecordCipher.open_record. */
static PyObject *Records_open_record(Ccm8 *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer d;
    PyObject *out = NULL, *o_top = NULL, *o_bits = NULL;
    unsigned char nonce[NONCE_LEN], aad[AAD_LEN];
    const unsigned char *p;
    unsigned long long es, seq, bits;
    long long top, delta;
    long epoch;
    int version, n;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "open_record() takes datagram, epoch, window");
        return NULL;
    }
    epoch = PyLong_AsLong(args[1]);
    if (epoch == -1 && PyErr_Occurred())
        return NULL;
    if (PyObject_GetBuffer(args[0], &d, PyBUF_SIMPLE) < 0)
        return NULL;
    p = d.buf;
    if (d.len < HEADER_LEN + EXPLICIT_LEN + TAG_LEN || p[0] != 23 || p[1] != 0xFE ||
        (long)get_be(p + 3, 2) != epoch || (Py_ssize_t)get_be(p + 11, 2) + HEADER_LEN != d.len) {
        PyBuffer_Release(&d);
        Py_RETURN_NONE;
    }
    version = (int)get_be(p + 1, 2);
    es = get_be(p + 3, 8);
    seq = es & 0xFFFFFFFFFFFFULL;
    if (!(o_top = PyObject_GetAttr(args[2], s_top)) || !(o_bits = PyObject_GetAttr(args[2], s_bits)))
        goto done;
    top = PyLong_AsLongLong(o_top);
    bits = PyLong_AsUnsignedLongLong(o_bits);
    if (PyErr_Occurred())
        goto done;
    delta = top - (long long)seq; /* the window's check(): new above it or unseen in it */
    if (delta >= 0 && (delta >= 64 || (bits >> delta) & 1)) {
        out = Py_NewRef(Py_None);
        goto done;
    }
    n = (int)d.len - HEADER_LEN - EXPLICIT_LEN - TAG_LEN;
    memcpy(nonce, self->iv, IV_LEN);
    memcpy(nonce + IV_LEN, p + HEADER_LEN, EXPLICIT_LEN);
    put_aad(aad, es, 23, version, n);
    if (!(out = PyBytes_FromStringAndSize(NULL, n)))
        goto done;
    if (!open_into(self, nonce, aad, AAD_LEN, p + HEADER_LEN + EXPLICIT_LEN, n,
                   (unsigned char *)PyBytes_AS_STRING(out))) {
        Py_SETREF(out, Py_NewRef(Py_False));
        goto done;
    }
    /* the window's update(): slide when seq is the new top, else mark it */
    if (delta < 0) {
        bits = -delta < 64 ? (bits << -delta) | 1 : 1;
        top = (long long)seq;
    } else {
        bits |= 1ULL << delta;
    }
    Py_SETREF(o_top, PyLong_FromLongLong(top));
    Py_SETREF(o_bits, PyLong_FromUnsignedLongLong(bits));
    if (!o_top || !o_bits || PyObject_SetAttr(args[2], s_top, o_top) < 0 ||
        PyObject_SetAttr(args[2], s_bits, o_bits) < 0)
        Py_CLEAR(out);
done:
    Py_XDECREF(o_top);
    Py_XDECREF(o_bits);
    PyBuffer_Release(&d);
    return out;
}

static PyObject *Records_get_iv(Ccm8 *self, void *closure)
{
    return PyBytes_FromStringAndSize((const char *)self->iv, IV_LEN);
}

static PyMethodDef Records_methods[] = {
    {"seal", (PyCFunction)(void (*)(void))Records_seal, METH_FASTCALL,
     "seal(ctype, es, plaintext, version=DTLS_1_2) -> the protected record, header included"},
    {"open", (PyCFunction)(void (*)(void))Records_open, METH_FASTCALL,
     "open(ctype, version, es, fragment) -> plaintext, or None when it fails authentication"},
    {"open_record", (PyCFunction)(void (*)(void))Records_open_record, METH_FASTCALL,
     "open_record(datagram, epoch, window) -> plaintext of one new application_data record "
     "(window updated), False when it fails authentication, None for anything else"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Records_getset[] = {
    {"iv", (getter)Records_get_iv, NULL, "the 4-byte implicit IV", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef Ccm8_methods[] = {
    {"encrypt", (PyCFunction)(void (*)(void))Ccm8_encrypt, METH_FASTCALL,
     "encrypt(nonce, plaintext, associated_data) -> ciphertext + 8-byte tag"},
    {"decrypt", (PyCFunction)(void (*)(void))Ccm8_decrypt, METH_FASTCALL,
     "decrypt(nonce, data, associated_data) -> plaintext; raises InvalidTag"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject Ccm8Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "greencoap._ccm.Ccm8",
    .tp_basicsize = sizeof(Ccm8),
    .tp_dealloc = (destructor)Ccm8_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "AES-128-CCM, 8-byte tag, 12-byte nonce, on reused OpenSSL contexts "
              "(as cryptography's AESCCM(key, tag_length=8)).",
    .tp_methods = Ccm8_methods,
    .tp_new = Ccm8_new,
};

static PyTypeObject RecordsType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "greencoap._ccm.RecordCipher",
    .tp_basicsize = sizeof(Ccm8),
    .tp_dealloc = (destructor)Ccm8_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "AES-128-CCM-8 protection of the DTLS 1.2 records of one direction "
              "(as greencoap.protocol.dtls.record.RecordCipher(key, iv)).",
    .tp_methods = Records_methods,
    .tp_getset = Records_getset,
    .tp_new = Records_new,
};

static struct PyModuleDef ccm_module = {
    PyModuleDef_HEAD_INIT, "greencoap._ccm",
    "AES-128-CCM-8 for the DTLS record layer (optional; see greencoap.protocol.dtls.record).", -1,
    NULL,
};

PyMODINIT_FUNC PyInit__ccm(void)
{
    PyObject *m, *exc_mod;
    if (PyType_Ready(&Ccm8Type) < 0 || PyType_Ready(&RecordsType) < 0)
        return NULL;
    if (!(s_top = PyUnicode_InternFromString("top")) ||
        !(s_bits = PyUnicode_InternFromString("bits")))
        return NULL;
    exc_mod = PyImport_ImportModule("cryptography.exceptions");
    if (!exc_mod)
        return NULL;
    InvalidTag = PyObject_GetAttrString(exc_mod, "InvalidTag");
    Py_DECREF(exc_mod);
    if (!InvalidTag)
        return NULL;
    m = PyModule_Create(&ccm_module);
    if (!m)
        return NULL;
    Py_INCREF(&Ccm8Type);
    if (PyModule_AddObject(m, "Ccm8", (PyObject *)&Ccm8Type) < 0) {
        Py_DECREF(&Ccm8Type);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&RecordsType);
    if (PyModule_AddObject(m, "RecordCipher", (PyObject *)&RecordsType) < 0) {
        Py_DECREF(&RecordsType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
