//! What Qikchat's reference and the WhatsApp platform allow in a message (shared/qikchat-api.md):
//! the longest text of each field, the most buttons and rows.

pub const TEXT: usize = 4096;
pub const CAPTION: usize = 1024;
pub const INTERACTIVE_BODY: usize = 1024;
pub const INTERACTIVE_HEADER: usize = 60;
pub const INTERACTIVE_FOOTER: usize = 60;
pub const REPLY_BUTTONS: usize = 3;
pub const BUTTON_TITLE: usize = 20;
pub const BUTTON_ID: usize = 256;
pub const LIST_BUTTON: usize = 20;
pub const LIST_ROWS: usize = 10;
pub const SECTION_TITLE: usize = 24;
pub const ROW_ID: usize = 200;
pub const ROW_TITLE: usize = 24;
pub const ROW_DESCRIPTION: usize = 72;
pub const TEMPLATE_NAME: usize = 512;
pub const TEMPLATE_BUTTONS: usize = 10;
/// Anything without a documented limit is still bounded, so no field can be unreasonable.
pub const ANY: usize = 4096;
