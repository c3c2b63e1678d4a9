//! Just enough TLS to read the server name from a ClientHello without consuming it (audit,
//! passthrough policy, choosing termination). Parsing is bounds-checked; anything malformed
//! yields no SNI.

/// More bytes are needed to see the whole ClientHello.
#[derive(Debug, PartialEq, Eq)]
pub struct Incomplete;

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|s| s[0] as usize)
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2).map(|s| u16::from_be_bytes([s[0], s[1]]) as usize)
    }
    fn u24(&mut self) -> Option<usize> {
        self.take(3).map(|s| (s[0] as usize) << 16 | (s[1] as usize) << 8 | s[2] as usize)
    }
}

/// SNI of a ClientHello at the start of `buf` (first record only).
pub fn client_hello_sni(buf: &[u8]) -> Result<Option<String>, Incomplete> {
    if buf.len() < 5 {
        return Err(Incomplete);
    }
    let rec_len = u16::from_be_bytes([buf[3], buf[4]]) as usize;
    let Some(record) = buf.get(5..5 + rec_len) else {
        return Err(Incomplete);
    };
    Ok(parse_hello(record))
}

fn parse_hello(record: &[u8]) -> Option<String> {
    let mut r = Reader { b: record, at: 0 };
    if r.u8()? != 1 {
        return None; // not a ClientHello
    }
    let len = r.u24()?;
    let mut r = Reader { b: r.take(len.min(record.len() - 4))?, at: 0 };
    r.take(2 + 32)?; // version, random
    let sid = r.u8()?;
    r.take(sid)?;
    let cs = r.u16()?;
    r.take(cs)?;
    let comp = r.u8()?;
    r.take(comp)?;
    let ext_len = r.u16()?;
    let mut ext = Reader { b: r.take(ext_len)?, at: 0 };
    while let (Some(ty), Some(len)) = (ext.u16(), ext.u16()) {
        let body = ext.take(len)?;
        if ty != 0 {
            continue;
        }
        let mut s = Reader { b: body, at: 0 };
        let list = s.u16()?;
        let mut s = Reader { b: s.take(list)?, at: 0 };
        while let Some(kind) = s.u8() {
            let n = s.u16()?;
            let name = s.take(n)?;
            if kind == 0 {
                return std::str::from_utf8(name).ok().map(str::to_ascii_lowercase);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ClientHello with one SNI entry, built by hand.
    fn hello(name: &str) -> Vec<u8> {
        let mut sni = Vec::new();
        sni.extend(((name.len() + 3) as u16).to_be_bytes());
        sni.push(0);
        sni.extend((name.len() as u16).to_be_bytes());
        sni.extend(name.as_bytes());
        let mut ext = Vec::new();
        ext.extend(0u16.to_be_bytes());
        ext.extend((sni.len() as u16).to_be_bytes());
        ext.extend(sni);
        let mut body = vec![3, 3];
        body.extend([7u8; 32]);
        body.push(0); // session id
        body.extend(2u16.to_be_bytes());
        body.extend([0x13, 0x01]);
        body.extend([1, 0]); // compression
        body.extend((ext.len() as u16).to_be_bytes());
        body.extend(ext);
        let mut hs = vec![1];
        hs.extend(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend(body);
        let mut rec = vec![0x16, 3, 1];
        rec.extend((hs.len() as u16).to_be_bytes());
        rec.extend(hs);
        rec
    }

    #[test]
    fn reads_sni_and_asks_for_more_when_cut() {
        let h = hello("API.example.com");
        assert_eq!(client_hello_sni(&h), Ok(Some("api.example.com".into())));
        assert_eq!(client_hello_sni(&h[..h.len() - 1]), Err(Incomplete));
        let mut garbage = h.clone();
        garbage[5] = 2; // ServerHello
        assert_eq!(client_hello_sni(&garbage), Ok(None));
    }
}
