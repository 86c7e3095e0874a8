//! Small text helpers shared by the wire layer and the job logic.

/// Shortens `text` to at most `max` bytes, at a character boundary
/// (`String::truncate` inside a character would panic).
pub fn clip(text: &mut String, max: usize) {
    if text.len() > max {
        let end = (0..=max)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text.truncate(end);
    }
}
