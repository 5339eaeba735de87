//! The [`TarWriter`]: validated entries written as a tar stream, every header made fresh.

use std::io::{self, Read, Write};

use super::entry::{Checked, Kind};

const BLOCK: usize = 512;

/// Writes validated entries as a tar stream, every header made fresh.
pub struct TarWriter<W: Write> {
    out: W,
}

fn pax_record(buf: &mut Vec<u8>, key: &str, value: &str) {
    // "LEN key=value\n", LEN counting itself.
    let body = key.len() + value.len() + 3;
    let mut len = body + body.to_string().len();
    if len.to_string().len() != body.to_string().len() {
        len += 1;
    }
    buf.extend_from_slice(format!("{len} {key}={value}\n").as_bytes());
}

fn set_field(field: &mut [u8], value: &str) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value.as_bytes()[..n]);
}

impl<W: Write> TarWriter<W> {
    /// A writer into `out`.
    pub fn new(out: W) -> TarWriter<W> {
        TarWriter { out }
    }

    fn pad(&mut self, len: u64) -> io::Result<()> {
        let rem = (len % BLOCK as u64) as usize;
        if rem != 0 {
            self.out.write_all(&[0; BLOCK][rem..])?;
        }
        Ok(())
    }

    fn header(&mut self, e: &Checked, kind: tar::EntryType, link: Option<&str>, size: u64) -> io::Result<()> {
        let mut pax = Vec::new();
        if e.path.len() > 100 {
            pax_record(&mut pax, "path", &e.path);
        }
        if let Some(l) = link.filter(|l| l.len() > 100) {
            pax_record(&mut pax, "linkpath", l);
        }
        if !pax.is_empty() {
            let mut h = tar::Header::new_ustar();
            set_field(&mut h.as_old_mut().name, "././@PaxHeader");
            h.set_entry_type(tar::EntryType::XHeader);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(e.mtime);
            h.set_size(pax.len() as u64);
            h.set_cksum();
            self.out.write_all(h.as_bytes())?;
            self.out.write_all(&pax)?;
            self.pad(pax.len() as u64)?;
        }
        let mut h = tar::Header::new_ustar();
        // Longer names are in the PAX record above, which readers take over this field.
        set_field(&mut h.as_old_mut().name, &e.path);
        if let Some(l) = link {
            set_field(&mut h.as_old_mut().linkname, l);
        }
        h.set_entry_type(kind);
        h.set_mode(e.mode);
        h.set_uid(e.uid);
        h.set_gid(e.gid);
        h.set_mtime(e.mtime);
        h.set_size(size);
        h.set_cksum();
        self.out.write_all(h.as_bytes())
    }

    /// Write `e`; a file's data is read from `data`, exactly its size. Returns the bytes of
    /// data read, which is less than the size when `data` ended early (the caller refuses).
    pub fn write(&mut self, e: &Checked, data: &mut dyn Read) -> io::Result<u64> {
        match &e.kind {
            Kind::File { size } => {
                self.header(e, tar::EntryType::Regular, None, *size)?;
                let n = io::copy(&mut data.take(*size), &mut self.out)?;
                if n < *size {
                    return Ok(n);
                }
                self.pad(n)?;
                Ok(n)
            }
            Kind::Dir => self.header(e, tar::EntryType::Directory, None, 0).map(|_| 0),
            Kind::Symlink(t) => self.header(e, tar::EntryType::Symlink, Some(t), 0).map(|_| 0),
            Kind::HardLink(t) => self.header(e, tar::EntryType::Link, Some(t), 0).map(|_| 0),
        }
    }

    /// End the archive (two zero blocks) and flush; returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0; 2 * BLOCK])?;
        self.out.flush()?;
        Ok(self.out)
    }
}
