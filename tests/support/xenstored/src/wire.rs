//! The xenstore wire format (xen/include/public/io/xs_wire.h): a header of four
//! native-endian u32 {type, req_id, tx_id, len} followed by `len` payload bytes.

use std::io::{self, Read};

/// Largest payload either side may send (XENSTORE_PAYLOAD_MAX).
pub(crate) const PAYLOAD_MAX: usize = 4096;

pub(crate) const CONTROL: u32 = 0;
pub(crate) const DIRECTORY: u32 = 1;
pub(crate) const READ: u32 = 2;
pub(crate) const GET_PERMS: u32 = 3;
pub(crate) const WATCH: u32 = 4;
pub(crate) const UNWATCH: u32 = 5;
pub(crate) const TRANSACTION_START: u32 = 6;
pub(crate) const TRANSACTION_END: u32 = 7;
pub(crate) const INTRODUCE: u32 = 8;
pub(crate) const RELEASE: u32 = 9;
pub(crate) const GET_DOMAIN_PATH: u32 = 10;
pub(crate) const WRITE: u32 = 11;
pub(crate) const MKDIR: u32 = 12;
pub(crate) const RM: u32 = 13;
pub(crate) const SET_PERMS: u32 = 14;
pub(crate) const WATCH_EVENT: u32 = 15;
pub(crate) const ERROR: u32 = 16;
pub(crate) const IS_DOMAIN_INTRODUCED: u32 = 17;
pub(crate) const RESUME: u32 = 18;
pub(crate) const SET_TARGET: u32 = 19;
pub(crate) const RESET_WATCHES: u32 = 21;
pub(crate) const DIRECTORY_PART: u32 = 22;

/// The names xenstored uses for the message types (its sockmsg_string()).
pub(crate) fn type_name(ty: u32) -> String {
    let name = match ty {
        CONTROL => "CONTROL",
        DIRECTORY => "DIRECTORY",
        READ => "READ",
        GET_PERMS => "GET_PERMS",
        WATCH => "WATCH",
        UNWATCH => "UNWATCH",
        TRANSACTION_START => "TRANSACTION_START",
        TRANSACTION_END => "TRANSACTION_END",
        INTRODUCE => "INTRODUCE",
        RELEASE => "RELEASE",
        GET_DOMAIN_PATH => "GET_DOMAIN_PATH",
        WRITE => "WRITE",
        MKDIR => "MKDIR",
        RM => "RM",
        SET_PERMS => "SET_PERMS",
        WATCH_EVENT => "WATCH_EVENT",
        ERROR => "ERROR",
        IS_DOMAIN_INTRODUCED => "IS_DOMAIN_INTRODUCED",
        RESUME => "RESUME",
        SET_TARGET => "SET_TARGET",
        RESET_WATCHES => "RESET_WATCHES",
        DIRECTORY_PART => "DIRECTORY_PART",
        other => return format!("UNKNOWN({other})"),
    };
    name.to_string()
}

/// One message in either direction.
#[derive(Debug)]
pub(crate) struct Message {
    pub ty: u32,
    pub req_id: u32,
    pub tx_id: u32,
    pub payload: Vec<u8>,
}

/// What came off the socket.
pub(crate) enum Incoming {
    Message(Message),
    /// The peer closed the connection (cleanly, between messages).
    Eof,
    /// The header announced more than PAYLOAD_MAX bytes: xenstored drops such a client.
    TooLong,
}

impl Message {
    pub fn read_from(reader: &mut impl Read) -> io::Result<Incoming> {
        let mut header = [0u8; 16];
        match reader.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Incoming::Eof),
            Err(e) => return Err(e),
        }
        let field = |i: usize| u32::from_ne_bytes(header[i * 4..i * 4 + 4].try_into().unwrap());
        let len = field(3) as usize;
        if len > PAYLOAD_MAX {
            return Ok(Incoming::TooLong);
        }
        let mut payload = vec![0u8; len];
        reader.read_exact(&mut payload)?;
        Ok(Incoming::Message(Message {
            ty: field(0),
            req_id: field(1),
            tx_id: field(2),
            payload,
        }))
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.payload.len());
        for field in [self.ty, self.req_id, self.tx_id, self.payload.len() as u32] {
            out.extend_from_slice(&field.to_ne_bytes());
        }
        out.extend_from_slice(&self.payload);
        out
    }
}

/// Number of NUL-terminated strings in a payload (xenstore_count_strings()).
pub(crate) fn count_strings(payload: &[u8]) -> usize {
    payload.iter().filter(|&&b| b == 0).count()
}

/// The NUL-terminated strings of a payload; bytes after the last NUL are ignored,
/// as xenstored's get_strings() does.
pub(crate) fn strings(payload: &[u8]) -> Vec<&[u8]> {
    let mut parts: Vec<&[u8]> = payload.split(|&b| b == 0).collect();
    parts.pop();
    parts
}

/// The single argument of a one-argument request: the payload must hold exactly
/// one NUL, at its end (xenstored's onearg()).
pub(crate) fn onearg(payload: &[u8]) -> Option<&[u8]> {
    match payload.iter().position(|&b| b == 0) {
        Some(nul) if nul + 1 == payload.len() => Some(&payload[..nul]),
        _ => None,
    }
}

/// C's atoi(): optional blanks and sign, then digits; anything else ends the number.
pub(crate) fn atoi(s: &[u8]) -> i64 {
    let mut rest = s;
    while let [b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c', tail @ ..] = rest {
        rest = tail;
    }
    let negative = matches!(rest.first(), Some(b'-'));
    if matches!(rest.first(), Some(b'-' | b'+')) {
        rest = &rest[1..];
    }
    let mut value: i64 = 0;
    for &b in rest.iter().take_while(|b| b.is_ascii_digit()) {
        value = value.saturating_mul(10).saturating_add(i64::from(b - b'0'));
    }
    // atoi() returns an int; the callers store it in an unsigned int.
    let value = if negative { -value } else { value };
    i64::from(value as i32)
}

/// A NUL-terminated string payload.
pub(crate) fn with_nul(s: &str) -> Vec<u8> {
    let mut out = s.as_bytes().to_vec();
    out.push(0);
    out
}
