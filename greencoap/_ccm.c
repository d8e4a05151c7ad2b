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
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <openssl/evp.h>

#define KEY_LEN 16
#define NONCE_LEN 12
#define TAG_LEN 8

static PyObject *InvalidTag; /* cryptography.exceptions.InvalidTag */

typedef struct {
    PyObject_HEAD
    EVP_CIPHER_CTX *enc;
    EVP_CIPHER_CTX *dec;
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

static PyObject *Ccm8_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    Py_buffer key;
    Ccm8 *self;
    static char *kwlist[] = {"key", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*:Ccm8", kwlist, &key))
        return NULL;
    if (key.len != KEY_LEN) {
        PyBuffer_Release(&key);
        return PyErr_Format(PyExc_ValueError, "an AES-128 key is 16 bytes, not %zd", key.len);
    }
    self = (Ccm8 *)type->tp_alloc(type, 0);
    if (self) {
        self->enc = new_ctx(key.buf, 1);
        self->dec = new_ctx(key.buf, 0);
        if (!self->enc || !self->dec) {
            Py_DECREF(self);
            self = NULL;
            PyErr_SetString(PyExc_RuntimeError, "OpenSSL could not set up AES-128-CCM");
        }
    }
    PyBuffer_Release(&key);
    return (PyObject *)self;
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
    unsigned char *o;
    int n, len;
    if (!get_args(args, nargs, "encrypt", b))
        return NULL;
    len = (int)b[1].len;
    out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)len + TAG_LEN);
    if (!out) {
        release(b);
        return NULL;
    }
    o = (unsigned char *)PyBytes_AS_STRING(out);
    if (EVP_EncryptInit_ex(self->enc, NULL, NULL, NULL, b[0].buf) != 1 ||
        EVP_EncryptUpdate(self->enc, NULL, &n, NULL, len) != 1 ||
        (b[2].len && EVP_EncryptUpdate(self->enc, NULL, &n, b[2].buf, (int)b[2].len) != 1) ||
        EVP_EncryptUpdate(self->enc, o, &n, b[1].buf, len) != 1 ||
        EVP_EncryptFinal_ex(self->enc, o + n, &n) != 1 ||
        EVP_CIPHER_CTX_ctrl(self->enc, EVP_CTRL_AEAD_GET_TAG, TAG_LEN, o + len) != 1) {
        Py_DECREF(out);
        release(b);
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL failed to encrypt");
        return NULL;
    }
    release(b);
    return out;
}

static PyObject *Ccm8_decrypt(Ccm8 *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer b[3];
    PyObject *out;
    const unsigned char *in;
    int n, len;
    if (!get_args(args, nargs, "decrypt", b))
        return NULL;
    if (b[1].len < TAG_LEN) {
        release(b);
        PyErr_SetNone(InvalidTag);
        return NULL;
    }
    in = b[1].buf;
    len = (int)b[1].len - TAG_LEN;
    out = PyBytes_FromStringAndSize(NULL, len);
    if (!out) {
        release(b);
        return NULL;
    }
    /* the tag goes in after the nonce (setting the nonce starts a new
     * message); the data's own update checks it */
    if (EVP_DecryptInit_ex(self->dec, NULL, NULL, NULL, b[0].buf) != 1 ||
        EVP_CIPHER_CTX_ctrl(self->dec, EVP_CTRL_AEAD_SET_TAG, TAG_LEN, (void *)(in + len)) != 1 ||
        EVP_DecryptUpdate(self->dec, NULL, &n, NULL, len) != 1 ||
        (b[2].len && EVP_DecryptUpdate(self->dec, NULL, &n, b[2].buf, (int)b[2].len) != 1) ||
        EVP_DecryptUpdate(self->dec, (unsigned char *)PyBytes_AS_STRING(out), &n, in, len) != 1) {
        Py_DECREF(out);
        release(b);
        PyErr_SetNone(InvalidTag);
        return NULL;
    }
    release(b);
    return out;
}

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

static struct PyModuleDef ccm_module = {
    PyModuleDef_HEAD_INIT, "greencoap._ccm",
    "AES-128-CCM-8 for the DTLS record layer (optional; see greencoap.protocol.dtls.record).", -1,
    NULL,
};

PyMODINIT_FUNC PyInit__ccm(void)
{
    PyObject *m, *exc_mod;
    if (PyType_Ready(&Ccm8Type) < 0)
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
    return m;
}
