//! Key names: pyautogui's names and single characters, turned into X keysyms.
//!
//! A [`Key`] is what to press, not where it is: finding (or making) a keycode for its keysym is
//! left to the keymap (`keymap.rs`). Names longer than one character are case-insensitive, as in
//! pyautogui; a single character is itself (`"A"` is a shifted `a`).

use crate::error::{Error, Result};

/// A key to press, by its X keysym.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    keysym: u32,
}

/// `XK_Shift_L`, held for a keysym on the shifted level.
pub(crate) const SHIFT_L: u32 = 0xffe1;

/// pyautogui's key names (and a few common aliases) with their X keysyms.
const NAMED: &[(&str, u32)] = &[
    ("enter", 0xff0d),
    ("return", 0xff0d),
    ("tab", 0xff09),
    ("space", 0x20),
    ("backspace", 0xff08),
    ("esc", 0xff1b),
    ("escape", 0xff1b),
    ("delete", 0xffff),
    ("del", 0xffff),
    ("insert", 0xff63),
    ("home", 0xff50),
    ("end", 0xff57),
    ("pageup", 0xff55),
    ("pgup", 0xff55),
    ("pagedown", 0xff56),
    ("pgdn", 0xff56),
    ("left", 0xff51),
    ("up", 0xff52),
    ("right", 0xff53),
    ("down", 0xff54),
    ("shift", 0xffe1),
    ("shiftleft", 0xffe1),
    ("shiftright", 0xffe2),
    ("ctrl", 0xffe3),
    ("ctrlleft", 0xffe3),
    ("ctrlright", 0xffe4),
    ("control", 0xffe3),
    ("alt", 0xffe9),
    ("altleft", 0xffe9),
    ("altright", 0xffea),
    ("option", 0xffe9),
    ("optionleft", 0xffe9),
    ("optionright", 0xffea),
    ("win", 0xffeb),
    ("winleft", 0xffeb),
    ("winright", 0xffec),
    ("super", 0xffeb),
    ("command", 0xffeb),
    ("cmd", 0xffeb),
    ("capslock", 0xffe5),
    ("numlock", 0xff7f),
    ("scrolllock", 0xff14),
    ("pause", 0xff13),
    ("print", 0xff61),
    ("printscreen", 0xff61),
    ("prntscrn", 0xff61),
    ("prtsc", 0xff61),
    ("prtscr", 0xff61),
    ("apps", 0xff67),
    ("menu", 0xff67),
    ("clear", 0xff0b),
    ("select", 0xff60),
    ("execute", 0xff62),
    ("help", 0xff6a),
    ("accept", 0xff0d),
    ("modechange", 0xff7e),
    ("add", 0xffab),
    ("subtract", 0xffad),
    ("multiply", 0xffaa),
    ("divide", 0xffaf),
    ("decimal", 0xffae),
    ("separator", 0xffac),
    ("volumemute", 0x1008ff12),
    ("volumedown", 0x1008ff11),
    ("volumeup", 0x1008ff13),
    ("playpause", 0x1008ff14),
    ("stop", 0x1008ff15),
    ("prevtrack", 0x1008ff16),
    ("nexttrack", 0x1008ff17),
    ("browserhome", 0x1008ff18),
    ("launchmail", 0x1008ff19),
    ("browsersearch", 0x1008ff1b),
    ("browserback", 0x1008ff26),
    ("browserforward", 0x1008ff27),
    ("browserstop", 0x1008ff28),
    ("browserrefresh", 0x1008ff29),
    ("sleep", 0x1008ff2f),
    ("browserfavorites", 0x1008ff30),
    ("launchmediaselect", 0x1008ff32),
    ("launchapp1", 0x1008ff40),
    ("launchapp2", 0x1008ff41),
    ("kanji", 0xff21),
    ("nonconvert", 0xff22),
    ("convert", 0xff23),
    ("kana", 0xff2e),
    ("hangul", 0xff31),
    ("hanguel", 0xff31),
    ("final", 0xff33),
    ("hanja", 0xff34),
    ("junja", 0xff38),
    ("yen", 0xa5),
];

impl Key {
    /// Parses a pyautogui key name (`enter`, `ctrl`, `f5`, `num7`, `pagedown`…) or a single
    /// character (`a`, `A`, `é`, `你`, `\n`).
    pub fn parse(name: &str) -> Result<Key> {
        let mut chars = name.chars();
        if let (Some(c), None) = (chars.next(), chars.next()) {
            return Ok(Key::from_char(c));
        }
        let lower = name.to_ascii_lowercase();
        if let Some(&(_, keysym)) = NAMED.iter().find(|(n, _)| *n == lower) {
            return Ok(Key { keysym });
        }
        if let Some(n) = numbered(&lower, "f").filter(|n| (1..=24).contains(n)) {
            return Ok(Key { keysym: 0xffbe + n - 1 });
        }
        if let Some(n) = numbered(&lower, "num").filter(|&n| n <= 9) {
            return Ok(Key { keysym: 0xffb0 + n });
        }
        Err(Error::UnknownKey(name.to_owned()))
    }

    /// The key that types `c`: its Latin-1 or Unicode keysym, or Return, Tab, BackSpace, Escape
    /// for `\n`/`\r`, `\t`, `\x08`, `\x1b`.
    pub fn from_char(c: char) -> Key {
        let keysym = match c {
            '\n' | '\r' => 0xff0d,
            '\t' => 0xff09,
            '\u{8}' => 0xff08,
            '\u{1b}' => 0xff1b,
            '\u{7f}' => 0xffff,
            ' '..='~' | '\u{a0}'..='\u{ff}' => c as u32,
            _ => 0x0100_0000 | c as u32,
        };
        Key { keysym }
    }

    /// A key given by its raw X keysym.
    pub fn from_keysym(keysym: u32) -> Key {
        Key { keysym }
    }

    /// Its X keysym.
    pub fn keysym(self) -> u32 {
        self.keysym
    }
}

/// The number after `prefix` in `name` (`f12` -> 12), written without leading zeros.
fn numbered(name: &str, prefix: &str) -> Option<u32> {
    let digits = name.strip_prefix(prefix)?;
    let canonical = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    if !canonical || (digits.len() > 1 && digits.starts_with('0')) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(name: &str) -> u32 {
        Key::parse(name).unwrap().keysym()
    }

    #[test]
    fn pyautogui_names_map_to_their_keysyms() {
        assert_eq!(sym("enter"), 0xff0d);
        assert_eq!(sym("Enter"), 0xff0d);
        assert_eq!(sym("esc"), 0xff1b);
        assert_eq!(sym("ctrl"), 0xffe3);
        assert_eq!(sym("pagedown"), 0xff56);
        assert_eq!(sym("f1"), 0xffbe);
        assert_eq!(sym("F12"), 0xffc9);
        assert_eq!(sym("f24"), 0xffd5);
        assert_eq!(sym("num0"), 0xffb0);
        assert_eq!(sym("num9"), 0xffb9);
        assert_eq!(sym("space"), 0x20);
    }

    #[test]
    fn single_characters_are_themselves() {
        assert_eq!(sym("a"), 'a' as u32);
        assert_eq!(sym("A"), 'A' as u32);
        assert_eq!(sym("é"), 0xe9);
        assert_eq!(sym("你"), 0x0100_4f60);
        assert_eq!(sym("\n"), 0xff0d);
        assert_eq!(sym("\t"), 0xff09);
    }

    #[test]
    fn unknown_names_are_errors_that_name_them() {
        for bad in ["f0", "f25", "f01", "num10", "enterr", "", "ctrl+c"] {
            match Key::parse(bad) {
                Err(Error::UnknownKey(n)) => assert_eq!(n, bad),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }
}
