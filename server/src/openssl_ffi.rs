//! The server's only unsafe code: the parts of OpenSSL's PKCS#7 API the `openssl` crate does not wrap, for
//! the SCEP CA and `Mdm-Signature` verification. It sits below both (`identity` and `scep` import it, it
//! imports neither). Each function takes and returns safe types; pointers never leave this module.
//!
//! * the digest algorithms of a SignedData's SignerInfos (checked before `PKCS7_verify`),
//! * reading a signed attribute of a SignerInfo (SCEP's messageType, transactionID, nonces),
//! * reading the challengePassword attribute of a CSR,
//! * the content-encryption algorithm of an EnvelopedData (to answer in the cipher the client chose),
//! * signing with extra signed attributes (a CertRep),
//! * a degenerate certs-only SignedData (the certificate inside a CertRep).
//!
//! Attribute values are returned as their DER encoding, re-encoded by OpenSSL and parsed by the caller in
//! safe code, so no ASN.1 union is read here.

use foreign_types::{ForeignType, ForeignTypeRef};
use openssl::error::ErrorStack;
use openssl::nid::Nid;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags, Pkcs7Ref};
use openssl::pkey::{PKeyRef, Private};
use openssl::x509::{X509Ref, X509ReqRef};
use openssl_sys as ffi;
use std::os::raw::{c_int, c_uchar, c_void};
use std::ptr;

// Not declared by openssl-sys; present in every OpenSSL since 1.0.
extern "C" {
    fn i2d_ASN1_TYPE(a: *const ffi::ASN1_TYPE, out: *mut *mut c_uchar) -> c_int;
    fn PKCS7_final(p7: *mut ffi::PKCS7, data: *mut ffi::BIO, flags: c_int) -> c_int;
}

const V_ASN1_OCTET_STRING: c_int = 4;
const V_ASN1_PRINTABLESTRING: c_int = 19;
const PKCS7_PARTIAL: c_int = 0x4000;

/// DER of an `ASN1_TYPE`, or None for a null pointer. The pointer must be valid for the call.
unsafe fn type_der(t: *const ffi::ASN1_TYPE) -> Option<Vec<u8>> {
    if t.is_null() {
        return None;
    }
    let len = i2d_ASN1_TYPE(t, ptr::null_mut());
    if len <= 0 {
        return None;
    }
    let mut buf = vec![0u8; len as usize];
    let mut out = buf.as_mut_ptr();
    let written = i2d_ASN1_TYPE(t, &mut out);
    (written == len).then_some(buf)
}

/// The first SignerInfo of a SignedData.
unsafe fn first_signer(p7: &Pkcs7Ref) -> Option<*mut ffi::PKCS7_SIGNER_INFO> {
    p7.signed()?;
    let sis = ffi::PKCS7_get_signer_info(p7.as_ptr());
    if sis.is_null() || ffi::OPENSSL_sk_num(sis as *const ffi::OPENSSL_STACK) < 1 {
        return None;
    }
    let si =
        ffi::OPENSSL_sk_value(sis as *const ffi::OPENSSL_STACK, 0) as *mut ffi::PKCS7_SIGNER_INFO;
    (!si.is_null()).then_some(si)
}

/// Every digest algorithm a SignedData names: its `digestAlgorithms` set (which `PKCS7_verify` sets up
/// digests from) and each SignerInfo's, in that order. None when `p7` is not SignedData or an algorithm is
/// unreadable. An algorithm OpenSSL does not know is `Nid::UNDEF`.
pub fn signer_digest_algorithms(p7: &Pkcs7Ref) -> Option<Vec<Nid>> {
    let signed = p7.signed()?;
    /// The algorithm of an `X509_ALGOR`; the pointer must be null or valid for the call.
    unsafe fn nid(alg: *const ffi::X509_ALGOR) -> Option<Nid> {
        if alg.is_null() {
            return None;
        }
        let mut obj: *const ffi::ASN1_OBJECT = ptr::null();
        ffi::X509_ALGOR_get0(&mut obj, ptr::null_mut(), ptr::null_mut(), alg);
        (!obj.is_null()).then(|| Nid::from_raw(ffi::OBJ_obj2nid(obj)))
    }
    // SAFETY: `p7` is a live PKCS7 borrowed for this call and `signed` its SignedData; the stacks, signer
    // infos and algorithm objects are owned by it and only read before returning.
    unsafe {
        let sd = signed.as_ptr();
        let (algs, sis) = ((*sd).md_algs, ffi::PKCS7_get_signer_info(p7.as_ptr()));
        if algs.is_null() || sis.is_null() {
            return None;
        }
        let mut out = Vec::new();
        for i in 0..ffi::OPENSSL_sk_num(algs as *const ffi::OPENSSL_STACK) {
            let alg = ffi::OPENSSL_sk_value(algs as *const ffi::OPENSSL_STACK, i);
            out.push(nid(alg as *const ffi::X509_ALGOR)?);
        }
        for i in 0..ffi::OPENSSL_sk_num(sis as *const ffi::OPENSSL_STACK) {
            let si = ffi::OPENSSL_sk_value(sis as *const ffi::OPENSSL_STACK, i)
                as *const ffi::PKCS7_SIGNER_INFO;
            if si.is_null() {
                return None;
            }
            out.push(nid((*si).digest_alg)?);
        }
        Some(out)
    }
}

/// DER of the value of signed attribute `nid` on the first signer, if present.
pub fn signed_attribute(p7: &Pkcs7Ref, nid: Nid) -> Option<Vec<u8>> {
    // SAFETY: `p7` is a live PKCS7 borrowed for this call; the signer info and attribute pointers are
    // owned by it and only read before returning.
    unsafe {
        let si = first_signer(p7)?;
        type_der(ffi::PKCS7_get_signed_attribute(si, nid.as_raw()))
    }
}

/// DER of the first value of the CSR's challengePassword attribute, if present.
pub fn challenge_password(req: &X509ReqRef) -> Option<Vec<u8>> {
    // SAFETY: `req` is live for the call; the attribute and its value are owned by it and only read.
    unsafe {
        let loc =
            ffi::X509_REQ_get_attr_by_NID(req.as_ptr(), Nid::PKCS9_CHALLENGEPASSWORD.as_raw(), -1);
        if loc < 0 {
            return None;
        }
        let attr = ffi::X509_REQ_get_attr(req.as_ptr(), loc);
        if attr.is_null() {
            return None;
        }
        type_der(ffi::X509_ATTRIBUTE_get0_type(attr, 0))
    }
}

/// The content-encryption algorithm of an EnvelopedData, as a NID.
pub fn envelope_cipher(p7: &Pkcs7Ref) -> Option<Nid> {
    if p7.type_().map(|t| t.nid()) != Some(Nid::PKCS7_ENVELOPED) {
        return None;
    }
    // SAFETY: the type was checked above, so `d.enveloped` is the active union member; every pointer on
    // the way is checked for null and owned by `p7`.
    unsafe {
        let env = (*p7.as_ptr()).d.enveloped;
        if env.is_null() || (*env).enc_data.is_null() {
            return None;
        }
        let alg = (*(*env).enc_data).algorithm;
        if alg.is_null() {
            return None;
        }
        let alg = openssl::x509::X509AlgorithmRef::from_ptr(alg);
        Some(alg.object().nid())
    }
}

/// A signed attribute to add: PrintableString or OCTET STRING.
pub enum AttrValue<'a> {
    Printable(&'a str),
    Octets(&'a [u8]),
}

/// SignedData over `content` (embedded, as id-data) by `cert`/`key` with SHA-256 and the given extra signed
/// attributes (contentType, signingTime and messageDigest are added by OpenSSL).
pub fn sign_with_attributes(
    cert: &X509Ref,
    key: &PKeyRef<Private>,
    content: &[u8],
    attributes: &[(Nid, AttrValue<'_>)],
) -> Result<Pkcs7, ErrorStack> {
    let flags = (Pkcs7Flags::BINARY | Pkcs7Flags::NOSMIMECAP).bits() | PKCS7_PARTIAL;
    // SAFETY: every pointer comes from a live safe wrapper or from an OpenSSL constructor checked for
    // null; ownership of each attribute string passes to the signer info only when adding succeeds
    // (otherwise it is freed here); the PKCS7 is wrapped in `Pkcs7` (which frees it) right after creation.
    unsafe {
        let raw = ffi::PKCS7_sign(
            cert.as_ptr(),
            key.as_ptr(),
            ptr::null_mut(),
            ptr::null_mut(),
            flags,
        );
        if raw.is_null() {
            return Err(ErrorStack::get());
        }
        let p7 = Pkcs7::from_ptr(raw);
        let si = first_signer(&p7).ok_or_else(ErrorStack::get)?;
        for (nid, value) in attributes {
            let (ty, bytes): (c_int, &[u8]) = match value {
                AttrValue::Printable(s) => (V_ASN1_PRINTABLESTRING, s.as_bytes()),
                AttrValue::Octets(b) => (V_ASN1_OCTET_STRING, b),
            };
            let s = ffi::ASN1_STRING_type_new(ty);
            if s.is_null() {
                return Err(ErrorStack::get());
            }
            if ffi::ASN1_STRING_set(s, bytes.as_ptr() as *const c_void, bytes.len() as c_int) != 1 {
                ffi::ASN1_STRING_free(s);
                return Err(ErrorStack::get());
            }
            if ffi::PKCS7_add_signed_attribute(si, nid.as_raw(), ty, s as *mut c_void) != 1 {
                ffi::ASN1_STRING_free(s);
                return Err(ErrorStack::get());
            }
        }
        let bio = ffi::BIO_new_mem_buf(content.as_ptr() as *const c_void, content.len() as c_int);
        if bio.is_null() {
            return Err(ErrorStack::get());
        }
        let ok = PKCS7_final(p7.as_ptr(), bio, flags);
        ffi::BIO_free_all(bio);
        if ok != 1 {
            return Err(ErrorStack::get());
        }
        Ok(p7)
    }
}

/// A CSR for `key` with `subject` and a challengePassword (PrintableString), signed with SHA-256: the
/// client side of PKCSReq (the `openssl` crate's request builder cannot add attributes).
pub fn csr_with_challenge(
    key: &PKeyRef<Private>,
    subject: &openssl::x509::X509NameRef,
    challenge: Option<&str>,
) -> Result<openssl::x509::X509Req, ErrorStack> {
    let mut b = openssl::x509::X509Req::builder()?;
    b.set_version(0)?;
    b.set_subject_name(subject)?;
    b.set_pubkey(key)?;
    let req = b.build();
    // SAFETY: `req` is owned here and live; OpenSSL copies the attribute bytes and signs in place.
    unsafe {
        if let Some(c) = challenge {
            let ok = ffi::X509_REQ_add1_attr_by_NID(
                req.as_ptr(),
                Nid::PKCS9_CHALLENGEPASSWORD.as_raw(),
                V_ASN1_PRINTABLESTRING,
                c.as_ptr(),
                c.len() as c_int,
            );
            if ok != 1 {
                return Err(ErrorStack::get());
            }
        }
        if ffi::X509_REQ_sign(req.as_ptr(), key.as_ptr(), ffi::EVP_sha256()) <= 0 {
            return Err(ErrorStack::get());
        }
    }
    Ok(req)
}

/// A degenerate (certs-only, unsigned) SignedData holding `certs`: how SCEP carries an issued certificate.
pub fn certs_only(certs: &[&X509Ref]) -> Result<Pkcs7, ErrorStack> {
    // SAFETY: the PKCS7 is owned by `Pkcs7` right after creation; PKCS7_add_certificate takes its own
    // reference to each certificate (it up-refs), so the borrowed ones stay owned by the caller.
    unsafe {
        let raw = ffi::PKCS7_new();
        if raw.is_null() {
            return Err(ErrorStack::get());
        }
        let p7 = Pkcs7::from_ptr(raw);
        if ffi::PKCS7_set_type(p7.as_ptr(), Nid::PKCS7_SIGNED.as_raw()) != 1
            || ffi::PKCS7_content_new(p7.as_ptr(), Nid::PKCS7_DATA.as_raw()) != 1
        {
            return Err(ErrorStack::get());
        }
        for c in certs {
            if ffi::PKCS7_add_certificate(p7.as_ptr(), c.as_ptr()) != 1 {
                return Err(ErrorStack::get());
            }
        }
        Ok(p7)
    }
}
