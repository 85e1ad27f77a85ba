//! mandelzoom: renders the frames of a zoom into the Mandelbrot set and
//! assembles them into an animated PNG. It knows nothing of lote: it is
//! the "existing program" that `app.toml` beside it publishes as an app.
//!
//!   mandelzoom render --from 1 --to 10 --frames 60 --width 320 --height 240
//!       writes frame-00001.pgm ... frame-00010.pgm (8-bit escape counts)
//!   mandelzoom merge --out zoom.png --preview preview.png --palette fire
//!       reads every frame-*.pgm here and writes the animation and a still
//!
//! Every frame depends only on its number, so frames rendered apart (on
//! other machines) merge into the same bytes as frames rendered together.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Where the zoom dives: a point on the edge of the set ("seahorse valley").
const CENTRE: (f64, f64) = (-0.743_643_887_037_151, 0.131_825_904_205_33);
/// The view's width at frame 1, and how much each frame zooms in.
const START_WIDTH: f64 = 3.0;
const ZOOM_PER_FRAME: f64 = 1.12;

struct Args(Vec<String>);

impl Args {
    fn get(&self, name: &str) -> Option<&str> {
        let flag = format!("--{name}");
        self.0
            .iter()
            .position(|a| *a == flag)
            .and_then(|i| self.0.get(i + 1))
            .map(String::as_str)
    }
    fn number(&self, name: &str, default: u32) -> Result<u32, String> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{name} {v:?} is not a whole number")),
        }
    }
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let result = match argv.first().map(String::as_str) {
        Some("render") => render(&Args(argv[1..].to_vec())),
        Some("merge") => merge(&Args(argv[1..].to_vec())),
        _ => Err("usage: mandelzoom render --from A --to B [--frames N --width W --height H --max-iter I]\n       mandelzoom merge --out zoom.png [--preview preview.png --palette fire|ice|grey]".into()),
    };
    if let Err(e) = result {
        eprintln!("mandelzoom: {e}");
        std::process::exit(2);
    }
}

fn render(a: &Args) -> Result<(), String> {
    let from = a.number("from", 1)?;
    let to = a.number("to", from)?;
    let width = a.number("width", 320)?;
    let height = a.number("height", 240)?;
    let max_iter = a.number("max-iter", 255)?.clamp(1, 255);
    if from == 0 || to < from || width == 0 || height == 0 || width > 8192 || height > 8192 {
        return Err("need 1 <= from <= to, and 1..8192 pixels each way".into());
    }
    for frame in from..=to {
        let pixels = frame_pixels(frame, width, height, max_iter);
        let name = format!("frame-{frame:05}.pgm");
        let mut out = Vec::with_capacity(pixels.len() + 32);
        write!(out, "P5\n{width} {height}\n255\n").map_err(|e| e.to_string())?;
        out.extend_from_slice(&pixels);
        std::fs::write(&name, out).map_err(|e| format!("cannot write {name}: {e}"))?;
        println!("rendered {name}");
    }
    Ok(())
}

/// Escape counts of one frame, row by row.
fn frame_pixels(frame: u32, width: u32, height: u32, max_iter: u32) -> Vec<u8> {
    let view = START_WIDTH / ZOOM_PER_FRAME.powi(frame as i32 - 1);
    let step = view / width as f64;
    let mut out = Vec::with_capacity((width * height) as usize);
    for y in 0..height {
        let ci = CENTRE.1 + (y as f64 - height as f64 / 2.0) * step;
        for x in 0..width {
            let cr = CENTRE.0 + (x as f64 - width as f64 / 2.0) * step;
            let (mut zr, mut zi, mut n) = (0.0f64, 0.0f64, 0u32);
            while n < max_iter && zr * zr + zi * zi <= 4.0 {
                let t = zr * zr - zi * zi + cr;
                zi = 2.0 * zr * zi + ci;
                zr = t;
                n += 1;
            }
            out.push(if n >= max_iter { 0 } else { n as u8 });
        }
    }
    out
}

struct Frame {
    width: u32,
    height: u32,
    pixels: Vec<u8>,
}

fn read_pgm(path: &Path) -> Result<Frame, String> {
    let data = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let bad = || format!("{} is not an 8-bit binary PGM", path.display());
    // Header: P5, width, height, maxval, each separated by whitespace.
    let mut fields = vec![];
    let mut i = 0;
    while fields.len() < 4 {
        while i < data.len() && data[i].is_ascii_whitespace() {
            i += 1;
        }
        let start = i;
        while i < data.len() && !data[i].is_ascii_whitespace() {
            i += 1;
        }
        if start == i {
            return Err(bad());
        }
        fields.push(String::from_utf8_lossy(&data[start..i]).into_owned());
    }
    let (w, h): (u32, u32) = match (fields[1].parse(), fields[2].parse()) {
        (Ok(w), Ok(h)) if fields[0] == "P5" && fields[3] == "255" => (w, h),
        _ => return Err(bad()),
    };
    let pixels = data.get(i + 1..).ok_or_else(bad)?.to_vec();
    if pixels.len() != (w * h) as usize {
        return Err(bad());
    }
    Ok(Frame {
        width: w,
        height: h,
        pixels,
    })
}

fn merge(a: &Args) -> Result<(), String> {
    let out = a.get("out").unwrap_or("zoom.png");
    let palette = palette(a.get("palette").unwrap_or("fire"))?;
    let mut names: Vec<PathBuf> = std::fs::read_dir(".")
        .map_err(|e| format!("cannot list the working directory: {e}"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.file_name().unwrap_or_default().to_string_lossy();
            n.starts_with("frame-") && n.ends_with(".pgm")
        })
        .collect();
    names.sort();
    if names.is_empty() {
        return Err("no frame-*.pgm here to merge".into());
    }
    let frames: Vec<Frame> = names
        .iter()
        .map(|p| read_pgm(p))
        .collect::<Result<_, _>>()?;
    let (w, h) = (frames[0].width, frames[0].height);
    if frames.iter().any(|f| f.width != w || f.height != h) {
        return Err("the frames differ in size".into());
    }
    std::fs::write(out, apng(&frames, &palette)?)
        .map_err(|e| format!("cannot write {out}: {e}"))?;
    println!("merged {} frames into {out}", frames.len());
    if let Some(preview) = a.get("preview") {
        let last = frames.last().expect("frames is not empty");
        let small = halve(last);
        std::fs::write(preview, apng(&[small], &palette)?)
            .map_err(|e| format!("cannot write {preview}: {e}"))?;
        println!("wrote the preview {preview}");
    }
    Ok(())
}

fn halve(f: &Frame) -> Frame {
    let (w, h) = ((f.width / 2).max(1), (f.height / 2).max(1));
    let mut pixels = Vec::with_capacity((w * h) as usize);
    for y in 0..h {
        for x in 0..w {
            pixels.push(
                f.pixels[((2 * y).min(f.height - 1) * f.width + (2 * x).min(f.width - 1)) as usize],
            );
        }
    }
    Frame {
        width: w,
        height: h,
        pixels,
    }
}

fn palette(name: &str) -> Result<Vec<u8>, String> {
    let mut p = Vec::with_capacity(768);
    for i in 0..256u32 {
        // Escape counts are mostly small: a log scale spreads them out.
        let t = (i as f64).ln_1p() / 256f64.ln();
        let (r, g, b) = match name {
            "fire" => (t.sqrt(), t * t, t.powi(4)),
            "ice" => (t.powi(3), t * t, t.sqrt()),
            "grey" => (t, t, t),
            other => return Err(format!("palette {other:?} is not fire, ice or grey")),
        };
        // Inside the set (0) stays black.
        let c = |v: f64| if i == 0 { 0 } else { (v * 255.0).round() as u8 };
        p.extend_from_slice(&[c(r), c(g), c(b)]);
    }
    Ok(p)
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    out.extend_from_slice(&crc.finalize().to_be_bytes());
}

/// An indexed-colour PNG; with more than one frame, an animated one
/// (APNG: browsers play it, other viewers show the first frame).
fn apng(frames: &[Frame], palette: &[u8]) -> Result<Vec<u8>, String> {
    let (w, h) = (frames[0].width, frames[0].height);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = vec![];
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 3, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"PLTE", palette);
    let animated = frames.len() > 1;
    if animated {
        let mut actl = (frames.len() as u32).to_be_bytes().to_vec();
        actl.extend_from_slice(&0u32.to_be_bytes());
        chunk(&mut out, b"acTL", &actl);
    }
    let mut sequence = 0u32;
    for (i, f) in frames.iter().enumerate() {
        if animated {
            let mut fctl = sequence.to_be_bytes().to_vec();
            sequence += 1;
            for v in [w, h, 0, 0] {
                fctl.extend_from_slice(&v.to_be_bytes());
            }
            fctl.extend_from_slice(&1u16.to_be_bytes());
            fctl.extend_from_slice(&12u16.to_be_bytes());
            fctl.extend_from_slice(&[0, 0]);
            chunk(&mut out, b"fcTL", &fctl);
        }
        let mut raw = Vec::with_capacity(((w + 1) * h) as usize);
        for row in f.pixels.chunks(w as usize) {
            raw.push(0);
            raw.extend_from_slice(row);
        }
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&raw).map_err(|e| e.to_string())?;
        let data = z.finish().map_err(|e| e.to_string())?;
        if i == 0 {
            chunk(&mut out, b"IDAT", &data);
        } else {
            let mut fdat = sequence.to_be_bytes().to_vec();
            sequence += 1;
            fdat.extend_from_slice(&data);
            chunk(&mut out, b"fdAT", &fdat);
        }
    }
    chunk(&mut out, b"IEND", &[]);
    Ok(out)
}
