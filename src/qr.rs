//! Renders QR codes as PNG images (`GET …/qr?format=png`).

/// Pixels per QR module and the quiet zone around the code, in modules.
const SCALE: usize = 8;
const QUIET: usize = 4;

/// A black-on-white PNG of `data` as a QR code.
///
/// Fails when the data does not fit in a QR code or the PNG encoder fails.
pub fn png(data: &str) -> Result<Vec<u8>, String> {
    let code = qrcode::QrCode::new(data.as_bytes()).map_err(|e| e.to_string())?;
    let width = code.width();
    let colors = code.to_colors();
    let side = (width + 2 * QUIET) * SCALE;
    let mut pixels = vec![255u8; side * side];
    for (i, color) in colors.iter().enumerate() {
        if *color == qrcode::Color::Dark {
            let (mx, my) = (i % width + QUIET, i / width + QUIET);
            for dy in 0..SCALE {
                let row = (my * SCALE + dy) * side;
                pixels[row + mx * SCALE..row + mx * SCALE + SCALE].fill(0);
            }
        }
    }
    let side_u32 = u32::try_from(side).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, side_u32, side_u32);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
        writer
            .write_image_data(&pixels)
            .map_err(|e| e.to_string())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_a_decodable_png_header() {
        let bytes = super::png("2@abc,def,ghi,jkl").expect("png");
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    }
}
