//! Real containers for the older layouts, written by the `tar` and
//! `parquet` crates, as [`crate::containers::Packer`]s.

use std::sync::Arc;

use crate::containers::Packed;

/// A real tar; offsets read back from the archive.
pub fn tar(items: &[(String, Vec<u8>)]) -> Packed {
    tar_after(items, 0)
}

/// A tar whose first member is `padding` bytes of zeros.
pub fn tar_after(items: &[(String, Vec<u8>)], padding: usize) -> Packed {
    let mut builder = tar::Builder::new(Vec::new());
    let mut append = |name: &str, bytes: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, name, bytes).unwrap();
    };
    if padding > 0 {
        append("padding.bin", &vec![0u8; padding]);
    }
    for (name, bytes) in items {
        append(name, bytes);
    }
    let bytes = builder.into_inner().unwrap();
    let mut archive = tar::Archive::new(bytes.as_slice());
    let mut offsets = Vec::new();
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        if entry.path().unwrap().to_str() != Some("padding.bin") {
            offsets.push(entry.raw_file_position());
        }
    }
    Packed { bytes, offsets }
}

/// A real Parquet file, uncompressed and plain-encoded, so each texture's
/// bytes lie whole in a data page; offsets found by searching the file.
pub fn parquet(items: &[(String, Vec<u8>)]) -> Packed {
    use parquet::basic::{Compression, Encoding};
    use parquet::data_type::{ByteArray, ByteArrayType};
    use parquet::file::properties::{EnabledStatistics, WriterProperties};
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;

    let schema = Arc::new(
        parse_message_type(
            "message textures { required binary name (UTF8); required binary data; }",
        )
        .unwrap(),
    );
    let properties = Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::UNCOMPRESSED)
            .set_dictionary_enabled(false)
            .set_encoding(Encoding::PLAIN)
            .set_statistics_enabled(EnabledStatistics::None)
            .build(),
    );
    let mut bytes = Vec::new();
    let mut writer = SerializedFileWriter::new(&mut bytes, schema, properties).unwrap();
    let mut group = writer.next_row_group().unwrap();
    let columns: [Vec<ByteArray>; 2] = [
        items
            .iter()
            .map(|(n, _)| ByteArray::from(n.as_str()))
            .collect(),
        items
            .iter()
            .map(|(_, b)| ByteArray::from(b.clone()))
            .collect(),
    ];
    for values in &columns {
        let mut column = group.next_column().unwrap().unwrap();
        column
            .typed::<ByteArrayType>()
            .write_batch(values, None, None)
            .unwrap();
        column.close().unwrap();
    }
    group.close().unwrap();
    writer.close().unwrap();
    let offsets = items
        .iter()
        .map(|(name, item)| {
            let found = bytes.windows(item.len()).position(|w| w == item.as_slice());
            found.unwrap_or_else(|| panic!("{name} is not stored whole")) as u64
        })
        .collect();
    Packed { bytes, offsets }
}
