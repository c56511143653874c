//! A strict incremental decoder for `Transfer-Encoding: chunked`, shared by both readers.
//!
//! chunk-size is 1 to 16 hex digits; extensions are `;name` or `;name=token` or
//! `;name="quoted"` with optional whitespace before each `;` (RFC 9112 BWS); the trailer
//! section is checked and dropped (trailers are never forwarded).

use bytes::{Buf, Bytes, BytesMut};

use super::syntax::{check_line_endings, is_tchar, HEAD_END};

/// The longest chunk-size line accepted.
const MAX_LINE: usize = 256;

/// Why a chunked body was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkError {
    Malformed(&'static str),
    /// The body is over the limit.
    TooLarge,
    /// The trailer section is over the head limit.
    TrailersTooLarge,
}

#[derive(Debug)]
enum State {
    Size,
    Data(usize),
    Trailers,
}

#[derive(Debug)]
pub struct Chunked {
    state: State,
    body: BytesMut,
    max_body: usize,
    max_trailers: usize,
}

impl Chunked {
    pub fn new(max_body: usize, max_trailers: usize) -> Chunked {
        Chunked { state: State::Size, body: BytesMut::new(), max_body, max_trailers }
    }

    /// Consume what it can from ``buf``; the whole body once the last chunk is read.
    pub fn feed(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, ChunkError> {
        loop {
            match self.state {
                State::Size => {
                    let window = &buf[..buf.len().min(MAX_LINE + 2)];
                    let Some(end) = memchr::memmem::find(window, b"\r\n") else {
                        check_line_endings(window).map_err(ChunkError::Malformed)?;
                        if buf.len() > MAX_LINE {
                            return Err(ChunkError::Malformed("chunk size line too long"));
                        }
                        return Ok(None);
                    };
                    let size = size_line(&buf[..end])?;
                    if size > self.max_body - self.body.len() {
                        return Err(ChunkError::TooLarge);
                    }
                    buf.advance(end + 2);
                    self.state = if size == 0 { State::Trailers } else { State::Data(size) };
                }
                State::Data(size) => {
                    if buf.len() < size + 2 {
                        return Ok(None);
                    }
                    if &buf[size..size + 2] != b"\r\n" {
                        return Err(ChunkError::Malformed("chunk data not followed by CRLF"));
                    }
                    self.body.extend_from_slice(&buf[..size]);
                    buf.advance(size + 2);
                    self.state = State::Size;
                }
                State::Trailers => return self.trailers(buf),
            }
        }
    }

    fn trailers(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, ChunkError> {
        if buf.starts_with(b"\r\n") {
            buf.advance(2);
            return Ok(Some(std::mem::take(&mut self.body).freeze()));
        }
        let window = &buf[..buf.len().min(self.max_trailers + 4)];
        let Some(end) = HEAD_END.find(window) else {
            check_line_endings(window).map_err(ChunkError::Malformed)?;
            if buf.len() > self.max_trailers {
                return Err(ChunkError::TrailersTooLarge);
            }
            return Ok(None);
        };
        // With the CRLF that ends the last field: a CR just before it is a bare CR.
        check_line_endings(&buf[..end + 2]).map_err(ChunkError::Malformed)?;
        for line in buf[..end].split(|&b| b == b'\n') {
            if !trailer_line(line.strip_suffix(b"\r").unwrap_or(line)) {
                return Err(ChunkError::Malformed("invalid trailer field"));
            }
        }
        buf.advance(end + 4);
        Ok(Some(std::mem::take(&mut self.body).freeze()))
    }
}

/// ``name:value`` with a token name and no control bytes but tab in the value.
fn trailer_line(line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|&b| b == b':') else { return false };
    colon > 0 && line[..colon].iter().all(|&b| is_tchar(b))
        && line[colon + 1..].iter().all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// The size announced by one chunk-size line (extensions checked and ignored).
fn size_line(line: &[u8]) -> Result<usize, ChunkError> {
    const BAD: ChunkError = ChunkError::Malformed("invalid chunk size line");
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(BAD);
    }
    let size = u64::from_str_radix(std::str::from_utf8(&line[..digits]).map_err(|_| BAD)?, 16)
        .map_err(|_| BAD)?;
    let mut i = digits;
    while i < line.len() {
        let semi = i + line[i..].iter().take_while(|b| matches!(b, b' ' | b'\t')).count();
        if line.get(semi) != Some(&b';') {
            return Err(BAD);
        }
        i = semi + 1;
        let name = line[i..].iter().take_while(|&&b| is_tchar(b)).count();
        if name == 0 {
            return Err(BAD);
        }
        i += name;
        if line.get(i) == Some(&b'=') {
            i += 1;
            if line.get(i) == Some(&b'"') {
                let text = line[i + 1..].iter()
                    .take_while(|&&b| b == b' ' || b == b'!' || (0x23..=0x7e).contains(&b)
                                && b != b'\\')
                    .count();
                i += 1 + text;
                if line.get(i) != Some(&b'"') {
                    return Err(BAD);
                }
                i += 1;
            } else {
                let value = line[i..].iter().take_while(|&&b| is_tchar(b)).count();
                if value == 0 {
                    return Err(BAD);
                }
                i += value;
            }
        }
    }
    usize::try_from(size).map_err(|_| ChunkError::TooLarge)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(data: &[u8], step: usize) -> Result<Option<Bytes>, ChunkError> {
        let mut c = Chunked::new(100, 50);
        let mut buf = BytesMut::new();
        for piece in data.chunks(step) {
            buf.extend_from_slice(piece);
            if let Some(body) = c.feed(&mut buf)? {
                return Ok(Some(body));
            }
        }
        Ok(None)
    }

    #[test]
    fn decodes_in_any_pieces() {
        let data = b"5;name=value\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-T: t\r\n\r\n";
        for step in [1, 3, 7, data.len()] {
            assert_eq!(decode(data, step).unwrap().unwrap(), &b"hello0123456789"[..]);
        }
        assert_eq!(decode(b"3;a=\"b c\";d\r\nabc\r\n0\r\n\r\n", 1).unwrap().unwrap(), &b"abc"[..]);
        assert_eq!(decode(b"3 ;a\r\nabc\r\n0\r\n\r\n", 2).unwrap().unwrap(), &b"abc"[..]);
        assert_eq!(decode(b"3\t;a\r\nabc\r\n0\r\n\r\n", 2).unwrap().unwrap(), &b"abc"[..]);
    }

    #[test]
    fn refuses_what_is_not_chunked() {
        for bad in [&b"zz\r\n"[..], b"-1\r\n", b"0x1\r\n", b" 1\r\n", b"1 \r\n", b"\r\n",
                    b"10000000000000000\r\n", b"1\na\r\n", b"1;a\nb\r\n", b"1;a\rb\r\n",
                    b"1; a=b\r\n", b"1;a=\"x\r\n", b"1\r\nab\r\n", b"0\r\nbad trailer\r\n\r\n",
                    b"0\r\nA: b\r\n c\r\n\r\n", b"0\r\nA:\r\r\n\r\n"] {
            assert!(matches!(decode(bad, 1), Err(ChunkError::Malformed(_))),
                    "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(decode(b"65\r\n", 4), Err(ChunkError::TooLarge));
        assert_eq!(decode(&[b"0\r\n".as_slice(), &b"T: x\r\n".repeat(10)].concat(), 5),
                   Err(ChunkError::TrailersTooLarge));
        let long = [b"1;".as_slice(), &[b'a'; 300]].concat();
        assert!(matches!(decode(&long, 400), Err(ChunkError::Malformed(_))));
    }
}
