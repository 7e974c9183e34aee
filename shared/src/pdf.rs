//! The text layer of a PDF, for a chat's context: the strings its content streams show (`Tj`,
//! `TJ`, `'`, `"`), decoded through the fonts' `ToUnicode` maps where the strings are codes, as
//! Latin-1 where they are plain bytes; streams inflated when `FlateDecode`d (object streams
//! included, so modern files' pages are counted). No layout, no OCR: a scanned page has no text.
//!
//! No PDF crate is in this build's offline registry (lopdf, pdf-extract); this reads what a chat
//! needs and refuses what it cannot read (encrypted files) rather than guess.

use std::collections::HashMap;
use std::io::Read as _;

/// What a PDF holds, as far as a chat's context goes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Extracted {
    pub text: String,
    pub pages: usize,
    /// The text stopped at the limit asked for.
    pub truncated: bool,
}

/// Why a PDF cannot be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PdfError {
    #[error("the file is not a PDF")]
    NotPdf,
    #[error("the PDF is encrypted")]
    Encrypted,
    #[error("the PDF has {0} pages; at most {1} are read")]
    TooManyPages(usize, usize),
}

/// The most bytes one stream may inflate to (a bomb stops here).
const MAX_INFLATED: u64 = 64 * 1024 * 1024;

/// Reads the text of `bytes`: at most `max_pages` pages, at most `max_text` bytes of text.
pub fn extract(bytes: &[u8], max_pages: usize, max_text: usize) -> Result<Extracted, PdfError> {
    if !bytes.starts_with(b"%PDF-") {
        return Err(PdfError::NotPdf);
    }
    if find(bytes, b"/Encrypt").is_some() {
        return Err(PdfError::Encrypted);
    }
    // Every stream's data, inflated where it says FlateDecode; the dictionaries before them and
    // the file's own text count pages.
    let mut streams = Vec::new();
    let mut at = 0;
    while let Some(start) = find(&bytes[at..], b"stream") {
        let keyword = at + start;
        at = keyword + 6;
        if bytes[..keyword].ends_with(b"end") {
            continue;
        }
        let mut data_start = at;
        if bytes.get(data_start) == Some(&b'\r') {
            data_start += 1;
        }
        if bytes.get(data_start) == Some(&b'\n') {
            data_start += 1;
        } else if data_start == at {
            continue;
        }
        let Some(end) = find(&bytes[data_start..], b"endstream") else {
            break;
        };
        let data = &bytes[data_start..data_start + end];
        let dictionary_start = bytes[..keyword]
            .windows(3)
            .rposition(|w| w == b"obj")
            .unwrap_or(0);
        let dictionary = &bytes[dictionary_start..keyword];
        let data = if find(dictionary, b"/FlateDecode").is_some() {
            inflate(data)
        } else if find(dictionary, b"/Filter").is_some() {
            // Images (DCT, CCITT, JBIG2) and filters no text is kept in.
            None
        } else {
            Some(data.to_vec())
        };
        if let Some(data) = data {
            streams.push(data);
        }
        at = data_start + end + 9;
    }
    let pages = count_pages(bytes) + streams.iter().map(|s| count_pages(s)).sum::<usize>();
    if pages > max_pages {
        return Err(PdfError::TooManyPages(pages, max_pages));
    }
    let mut map = HashMap::new();
    for stream in &streams {
        if find(stream, b"begincmap").is_some() {
            read_cmap(stream, &mut map);
        }
    }
    let mut out = Extracted {
        pages,
        ..Extracted::default()
    };
    for stream in &streams {
        if find(stream, b"BT").is_some() && find(stream, b"begincmap").is_none() {
            show_text(stream, &map, &mut out.text);
            if out.text.len() > max_text {
                let mut cut = max_text;
                while !out.text.is_char_boundary(cut) {
                    cut -= 1;
                }
                out.text.truncate(cut);
                out.truncated = true;
                break;
            }
        }
    }
    out.text = out.text.trim().to_owned();
    Ok(out)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn inflate(data: &[u8]) -> Option<Vec<u8>> {
    // A stream cut short (a trailing newline, a damaged end) still gives what inflated.
    let mut out = Vec::new();
    let _ = flate2::read::ZlibDecoder::new(data)
        .take(MAX_INFLATED)
        .read_to_end(&mut out);
    (!out.is_empty()).then_some(out)
}

/// `/Type /Page` (not `/Pages`) entries.
fn count_pages(bytes: &[u8]) -> usize {
    let mut count = 0;
    let mut at = 0;
    while let Some(found) = find(&bytes[at..], b"/Type") {
        let mut i = at + found + 5;
        while bytes.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
            i += 1;
        }
        if bytes[i..].starts_with(b"/Page") && !bytes[i..].starts_with(b"/Pages") {
            count += 1;
        }
        at = i;
    }
    count
}

/// The `bfchar` and `bfrange` entries of a ToUnicode CMap: code → text.
fn read_cmap(cmap: &[u8], map: &mut HashMap<u32, String>) {
    let text = String::from_utf8_lossy(cmap);
    let hexes = |line: &str| -> Vec<String> {
        line.split('<')
            .skip(1)
            .filter_map(|part| part.split('>').next().map(str::to_owned))
            .collect()
    };
    let code = |hex: &str| u32::from_str_radix(hex, 16).ok();
    let unicode = |hex: &str| {
        let units: Vec<u16> = hex
            .as_bytes()
            .chunks(4)
            .filter_map(|c| u16::from_str_radix(std::str::from_utf8(c).ok()?, 16).ok())
            .collect();
        String::from_utf16_lossy(&units)
    };
    for section in text.split("beginbfchar").skip(1) {
        let body = section.split("endbfchar").next().unwrap_or_default();
        for line in body.lines() {
            if let [from, to] = hexes(line).as_slice()
                && let Some(from) = code(from)
            {
                map.insert(from, unicode(to));
            }
        }
    }
    for section in text.split("beginbfrange").skip(1) {
        let body = section.split("endbfrange").next().unwrap_or_default();
        for line in body.lines() {
            let parts = hexes(line);
            if parts.len() == 3
                && !line.contains('[')
                && let (Some(low), Some(high)) = (code(&parts[0]), code(&parts[1]))
            {
                let first: Vec<u16> = unicode(&parts[2]).encode_utf16().collect();
                for (offset, c) in (low..=high.min(low + 65_535)).enumerate() {
                    let mut units = first.clone();
                    if let Some(last) = units.last_mut() {
                        *last = last.wrapping_add(u16::try_from(offset).unwrap_or(0));
                    }
                    map.insert(c, String::from_utf16_lossy(&units));
                }
            }
        }
    }
}

/// Appends the text a content stream shows: its strings in order, a space between `TJ` parts set
/// far apart, a line break at each text line move.
fn show_text(stream: &[u8], map: &HashMap<u32, String>, out: &mut String) {
    let mut i = 0;
    let mut strings: Vec<(Vec<u8>, bool)> = Vec::new();
    while i < stream.len() {
        match stream[i] {
            b'(' => {
                let (string, next) = literal(stream, i + 1);
                strings.push((string, false));
                i = next;
            }
            b'<' if stream.get(i + 1) != Some(&b'<') => {
                let end = stream[i..]
                    .iter()
                    .position(|b| *b == b'>')
                    .map_or(stream.len(), |p| i + p);
                let hex: Vec<u8> = stream[i + 1..end]
                    .iter()
                    .copied()
                    .filter(u8::is_ascii_hexdigit)
                    .collect();
                let bytes = hex
                    .chunks(2)
                    .filter_map(|pair| {
                        let text = std::str::from_utf8(pair).ok()?;
                        let padded = if text.len() == 1 {
                            format!("{text}0")
                        } else {
                            text.to_owned()
                        };
                        u8::from_str_radix(&padded, 16).ok()
                    })
                    .collect();
                strings.push((bytes, true));
                i = end + 1;
            }
            b'-' | b'0'..=b'9' | b'.' if !strings.is_empty() => {
                // A TJ adjustment: a large one reads as a space.
                let end = stream[i..]
                    .iter()
                    .position(|b| !(b.is_ascii_digit() || *b == b'.' || *b == b'-'))
                    .map_or(stream.len(), |p| i + p);
                if std::str::from_utf8(&stream[i..end])
                    .ok()
                    .and_then(|n| n.parse::<f64>().ok())
                    .is_some_and(|n| n < -200.0)
                {
                    strings.push((b" ".to_vec(), false));
                }
                i = end.max(i + 1);
            }
            b'T' if matches!(stream.get(i + 1), Some(b'j' | b'J')) => {
                flush(&mut strings, map, out);
                i += 2;
            }
            b'\'' | b'"' => {
                out.push('\n');
                flush(&mut strings, map, out);
                i += 1;
            }
            b'T' if matches!(stream.get(i + 1), Some(b'd' | b'D' | b'*')) => {
                strings.clear();
                if !out.ends_with('\n') && !out.is_empty() {
                    out.push('\n');
                }
                i += 2;
            }
            b'E' if stream.get(i + 1) == Some(&b'T') => {
                strings.clear();
                if !out.ends_with('\n') && !out.is_empty() {
                    out.push('\n');
                }
                i += 2;
            }
            b'%' => {
                while i < stream.len() && stream[i] != b'\n' && stream[i] != b'\r' {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
}

/// Writes the strings shown, through the CMap when they are codes it knows.
fn flush(strings: &mut Vec<(Vec<u8>, bool)>, map: &HashMap<u32, String>, out: &mut String) {
    for (bytes, _) in strings.drain(..) {
        if bytes == b" " {
            out.push(' ');
            continue;
        }
        let two_byte = !map.is_empty()
            && bytes.len() % 2 == 0
            && bytes
                .chunks(2)
                .all(|c| map.contains_key(&(u32::from(c[0]) << 8 | u32::from(c[1]))));
        if two_byte {
            for c in bytes.chunks(2) {
                if let Some(text) = map.get(&(u32::from(c[0]) << 8 | u32::from(c[1]))) {
                    out.push_str(text);
                }
            }
        } else if !map.is_empty() && bytes.iter().all(|b| map.contains_key(&u32::from(*b))) {
            for b in &bytes {
                if let Some(text) = map.get(&u32::from(*b)) {
                    out.push_str(text);
                }
            }
        } else {
            out.extend(bytes.iter().map(|b| char::from(*b)));
        }
    }
}

/// A literal string from after its `(` to its `)`: escapes and balanced parentheses.
fn literal(stream: &[u8], mut i: usize) -> (Vec<u8>, usize) {
    let mut out = Vec::new();
    let mut depth = 1;
    while i < stream.len() {
        let b = stream[i];
        match b {
            b'\\' => {
                i += 1;
                match stream.get(i) {
                    Some(b'n') => out.push(b'\n'),
                    Some(b'r') => out.push(b'\r'),
                    Some(b't') => out.push(b'\t'),
                    Some(b'b') => out.push(8),
                    Some(b'f') => out.push(12),
                    Some(d @ b'0'..=b'7') => {
                        let mut value = u32::from(d - b'0');
                        let mut taken = 1;
                        while taken < 3
                            && let Some(d @ b'0'..=b'7') = stream.get(i + 1)
                        {
                            value = value * 8 + u32::from(d - b'0');
                            i += 1;
                            taken += 1;
                        }
                        out.push(u8::try_from(value & 0xff).unwrap_or(b'?'));
                    }
                    Some(b'\r' | b'\n') => {}
                    Some(other) => out.push(*other),
                    None => {}
                }
            }
            b'(' => {
                depth += 1;
                out.push(b);
            }
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return (out, i + 1);
                }
                out.push(b);
            }
            _ => out.push(b),
        }
        i += 1;
    }
    (out, i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    /// A one-page PDF whose content stream is `content`, deflated or not.
    pub fn pdf(content: &[u8], deflate: bool) -> Vec<u8> {
        let data = if deflate {
            let mut encoder =
                flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(content).expect("deflate");
            encoder.finish().expect("deflate")
        } else {
            content.to_vec()
        };
        let filter = if deflate { " /Filter /FlateDecode" } else { "" };
        let mut out = b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n\
            2 0 obj << /Type /Pages /Kids [3 0 R] /Count 1 >> endobj\n\
            3 0 obj << /Type /Page /Parent 2 0 R /Contents 4 0 R >> endobj\n"
            .to_vec();
        out.extend(format!("4 0 obj << /Length {}{filter} >>\nstream\n", data.len()).as_bytes());
        out.extend(&data);
        out.extend(b"\nendstream\nendobj\ntrailer << /Root 1 0 R >>\n%%EOF\n");
        out
    }

    #[test]
    fn text_is_read_from_plain_and_deflated_streams() {
        let content = b"BT /F1 12 Tf 72 712 Td (Lighthouses \\(old\\) guide) Tj 0 -14 Td [(Be) -300 (am)] TJ ET";
        for deflate in [false, true] {
            let read = extract(&pdf(content, deflate), 10, 1000).expect("read");
            assert_eq!(read.pages, 1);
            assert_eq!(read.text, "Lighthouses (old) guide\nBe am");
            assert!(!read.truncated);
        }
    }

    #[test]
    fn codes_go_through_the_to_unicode_map() {
        let cmap = b"/CIDInit /ProcSet findresource begin begincmap\n2 beginbfchar\n<0001> <0048>\n<0002> <0069>\nendbfchar\n1 beginbfrange\n<0003> <0004> <00E9>\nendbfrange\nendcmap";
        let mut file = pdf(b"BT <000100020003> Tj ET", false);
        file.extend(format!("5 0 obj << /Length {} >>\nstream\n", cmap.len()).as_bytes());
        file.extend(cmap);
        file.extend(b"\nendstream\nendobj\n");
        assert_eq!(extract(&file, 10, 100).expect("read").text, "Hi\u{e9}");
    }

    #[test]
    fn scans_have_no_text_and_bad_files_are_refused() {
        let scan = pdf(b"q 612 0 0 792 0 0 cm /Im1 Do Q", true);
        let read = extract(&scan, 10, 100).expect("read");
        assert_eq!((read.text.as_str(), read.pages), ("", 1));
        assert_eq!(extract(b"hello", 10, 100), Err(PdfError::NotPdf));
        let mut encrypted = pdf(b"BT (x) Tj ET", false);
        encrypted.extend(b"trailer << /Encrypt 9 0 R >>");
        assert_eq!(extract(&encrypted, 10, 100), Err(PdfError::Encrypted));
        assert_eq!(
            extract(&pdf(b"BT (x) Tj ET", false), 0, 100),
            Err(PdfError::TooManyPages(1, 0))
        );
        let long = extract(&pdf(b"BT (abcdefghij) Tj ET", false), 10, 4).expect("read");
        assert_eq!((long.text.as_str(), long.truncated), ("abcd", true));
    }
}
