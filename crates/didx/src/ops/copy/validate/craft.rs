//! Hostile archives built byte by byte (the `tar` crate's builder would refuse to write them).

/// One raw ustar header with `name` (and `prefix`) written as given, then `data`, padded.
#[allow(clippy::too_many_arguments)]
pub fn entry(out: &mut Vec<u8>, prefix: &[u8], name: &[u8], kind: u8, link: &[u8], mode: u32, size: u64, data: &[u8]) {
    let mut h = tar::Header::new_ustar();
    {
        let u = h.as_ustar_mut().unwrap();
        u.name[..name.len()].copy_from_slice(name);
        u.prefix[..prefix.len()].copy_from_slice(prefix);
        u.linkname[..link.len()].copy_from_slice(link);
    }
    h.set_entry_type(tar::EntryType::new(kind));
    h.set_mode(mode);
    h.set_uid(1000);
    h.set_gid(1000);
    h.set_mtime(1_000_000_000);
    h.set_size(size);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}
/// A PAX extended header ('x') with these records for the next entry.
pub fn pax(out: &mut Vec<u8>, records: &[(&str, &[u8])]) {
    let mut body = Vec::new();
    for (k, v) in records {
        let rest = k.len() + v.len() + 3;
        let mut len = rest + rest.to_string().len();
        if len.to_string().len() != rest.to_string().len() {
            len += 1;
        }
        body.extend_from_slice(format!("{len} {k}=").as_bytes());
        body.extend_from_slice(v);
        body.push(b'\n');
    }
    entry(out, b"", b"././@PaxHeader", b'x', b"", 0o644, body.len() as u64, &body);
}
/// A GNU long name ('L') or long link ('K') record for the next entry.
pub fn gnu_long(out: &mut Vec<u8>, kind: u8, value: &[u8]) {
    let mut v = value.to_vec();
    v.push(0);
    entry(out, b"", b"././@LongLink", kind, b"", 0o644, v.len() as u64, &v);
}
/// A plain entry: regular file with `data`, or another type with no data.
pub fn simple(out: &mut Vec<u8>, name: &str, kind: u8, link: &str, data: &[u8]) {
    entry(out, b"", name.as_bytes(), kind, link.as_bytes(), 0o644, data.len() as u64, data);
}
/// The end of an archive.
pub fn end(mut out: Vec<u8>) -> Vec<u8> {
    out.extend_from_slice(&[0; 1024]);
    out
}
