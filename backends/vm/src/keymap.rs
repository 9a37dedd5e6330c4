//! The display's keyboard mapping as this desktop sees it: which keycode (and shift level) types a
//! keysym, and which spare keycodes it may bind to keysyms the map lacks.
//!
//! Pure bookkeeping, with no X connection: `desktop.rs` reads the map from the server, sends the
//! binding requests this module decides on, and the key events.
//!
//! A keysym the map lacks (`é`, `你`, `✓` on a US map) is typed by binding a spare keycode (one
//! with no keysym at all) to it. A binding is not undone right after the keystroke: a client
//! reads the new map only when it handles the key event, which can be after a prompt restore, and
//! would then see the restored map and type nothing or the wrong character (the classic failure of
//! `xdotool type`). So bindings stay until their keycode is needed for another keysym, which
//! happens only once the keycode has been unused for [`REBIND_AGE`], and all are undone when the
//! desktop closes.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::keys::SHIFT_L;

/// How long a temporarily bound keycode stays untouched after its last keystroke before it may
/// be bound to another keysym: time for every client to have handled the key event.
pub(crate) const REBIND_AGE: Duration = Duration::from_millis(200);

/// Where a keysym is on the keyboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stroke {
    /// The keycode to press.
    pub(crate) keycode: u8,
    /// Whether Shift must be held (the keysym is on the second level).
    pub(crate) shift: bool,
}

/// A binding to make before the keystroke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Binding {
    /// The spare keycode to bind.
    pub(crate) keycode: u8,
    /// The keysym to bind it to.
    pub(crate) keysym: u32,
    /// How long to wait first, so that the keycode's previous keysym has been read by clients.
    pub(crate) wait: Duration,
}

/// What typing a keysym takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plan {
    /// The map has it: press this.
    Ready(Stroke),
    /// Bind a spare keycode first, then press it.
    Bind(Binding),
    /// The map lacks it and there is no spare keycode.
    NoSpare,
}

#[derive(Debug, Clone, Copy)]
struct Bound {
    keysym: u32,
    last_used: Instant,
}

/// The keyboard mapping, see the module documentation.
#[derive(Debug, Default)]
pub(crate) struct Keymap {
    /// What the server's map has on levels 1 and 2, bound keycodes excluded.
    index: HashMap<u32, Stroke>,
    /// Keycodes with no keysym when the map was read, plus those this desktop bound.
    spare: Vec<u8>,
    /// This desktop's own bindings.
    bound: HashMap<u8, Bound>,
    /// Keycodes whose binding this desktop changed and whose MappingNotify is still to come.
    own_changes: Vec<u8>,
    /// Keycodes held down: never rebound until released.
    held: HashSet<u8>,
}

impl Keymap {
    /// Reads a core keyboard mapping: `keysyms` holds `per_keycode` keysyms for each keycode from
    /// `min_keycode` on. Bindings made earlier are kept when the server still has them.
    pub(crate) fn update(&mut self, min_keycode: u8, per_keycode: u8, keysyms: &[u32]) {
        let per = usize::from(per_keycode.max(1));
        self.index.clear();
        self.spare.clear();
        let mut still_bound = HashMap::new();
        for (i, syms) in keysyms.chunks(per).enumerate() {
            let Ok(keycode) = u8::try_from(usize::from(min_keycode) + i) else { break };
            if let Some(b) = self.bound.get(&keycode) {
                if syms.first() == Some(&b.keysym) {
                    still_bound.insert(keycode, *b);
                    self.spare.push(keycode);
                    continue;
                }
            }
            if syms.iter().all(|&s| s == 0) {
                self.spare.push(keycode);
                continue;
            }
            for (level, &sym) in syms.iter().take(2).enumerate() {
                // Shift reaches the second level only on character keys: on the keypad it takes
                // NumLock (KP_Begin / KP_5), on function keys Alt or Control (Print / Sys_Req).
                if sym == 0 || (level == 1 && !is_character(syms[0])) {
                    continue;
                }
                let stroke = Stroke { keycode, shift: level == 1 };
                // Prefer the unshifted level and the lowest keycode.
                let better = match self.index.get(&sym) {
                    None => true,
                    Some(old) => old.shift && !stroke.shift,
                };
                if better {
                    self.index.insert(sym, stroke);
                }
            }
        }
        self.bound = still_bound;
        // Bind from the top down, as the low spare keycodes are the likeliest to gain a meaning.
        self.spare.reverse();
    }

    /// The keycode of Shift, if the map has one.
    pub(crate) fn shift(&self) -> Option<u8> {
        self.index.get(&SHIFT_L).filter(|s| !s.shift).map(|s| s.keycode)
    }

    /// What typing `keysym` takes now.
    pub(crate) fn plan(&mut self, keysym: u32, now: Instant) -> Plan {
        if let Some(&stroke) = self.index.get(&keysym) {
            if !stroke.shift || self.shift().is_some() {
                return Plan::Ready(stroke);
            }
        }
        if let Some((&keycode, b)) = self.bound.iter_mut().find(|(_, b)| b.keysym == keysym) {
            b.last_used = now;
            return Plan::Ready(Stroke { keycode, shift: false });
        }
        // A never-used spare first, else the one unused for longest.
        if let Some(&keycode) = self.spare.iter().find(|k| !self.bound.contains_key(k)) {
            return Plan::Bind(Binding { keycode, keysym, wait: Duration::ZERO });
        }
        match self.bound.iter().filter(|(k, _)| !self.held.contains(k)).min_by_key(|(_, b)| b.last_used) {
            Some((&keycode, b)) => {
                let wait = REBIND_AGE.saturating_sub(now.saturating_duration_since(b.last_used));
                Plan::Bind(Binding { keycode, keysym, wait })
            }
            None => Plan::NoSpare,
        }
    }

    /// Records that `binding` was sent to the server and its key is being pressed at `now`.
    pub(crate) fn bound(&mut self, binding: Binding, now: Instant) {
        self.bound.insert(binding.keycode, Bound { keysym: binding.keysym, last_used: now });
        self.own_changes.push(binding.keycode);
    }

    /// Marks `keycode` held down (`true`) or released: a held keycode keeps its binding.
    pub(crate) fn hold(&mut self, keycode: u8, down: bool) {
        if down {
            self.held.insert(keycode);
        } else {
            self.held.remove(&keycode);
        }
    }

    /// Whether a MappingNotify for `first_keycode`..+`count` is the echo of this desktop's own
    /// change (then the map need not be read again).
    pub(crate) fn is_own_change(&mut self, first_keycode: u8, count: u8) -> bool {
        if count != 1 {
            return false;
        }
        match self.own_changes.iter().position(|&k| k == first_keycode) {
            Some(i) => {
                self.own_changes.remove(i);
                true
            }
            None => false,
        }
    }

    /// Takes every binding this desktop made, to undo them; the map forgets them.
    pub(crate) fn take_bindings(&mut self) -> Vec<u8> {
        self.own_changes.clear();
        self.held.clear();
        let mut codes: Vec<u8> = self.bound.drain().map(|(k, _)| k).collect();
        codes.sort_unstable();
        codes
    }
}

/// Whether a keysym types a character (Latin-1 or Unicode), rather than being a function,
/// keypad or modifier key (`0xff00..=0xffff`) or a vendor key.
fn is_character(keysym: u32) -> bool {
    keysym < 0xff00 || (0x0100_0000..0x0110_0000).contains(&keysym)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A map with keycodes 8..=12: a/A, Shift_L, empty, 1/!, empty.
    fn map() -> Keymap {
        let mut k = Keymap::default();
        let syms = [0x61, 0x41, SHIFT_L, 0, 0, 0, 0x31, 0x21, 0, 0];
        k.update(8, 2, &syms);
        k
    }

    #[test]
    fn finds_keys_and_their_shift_level() {
        let mut k = map();
        let now = Instant::now();
        assert_eq!(k.plan(0x61, now), Plan::Ready(Stroke { keycode: 8, shift: false }));
        assert_eq!(k.plan(0x41, now), Plan::Ready(Stroke { keycode: 8, shift: true }));
        assert_eq!(k.plan(0x21, now), Plan::Ready(Stroke { keycode: 11, shift: true }));
        assert_eq!(k.shift(), Some(9));
    }

    #[test]
    fn binds_spare_keycodes_from_the_top_and_reuses_bindings() {
        let mut k = map();
        let t0 = Instant::now();
        let Plan::Bind(b) = k.plan(0xe9, t0) else { panic!() };
        assert_eq!((b.keycode, b.wait), (12, Duration::ZERO));
        k.bound(b, t0);
        assert_eq!(k.plan(0xe9, t0), Plan::Ready(Stroke { keycode: 12, shift: false }));
        let Plan::Bind(b2) = k.plan(0xf6, t0) else { panic!() };
        assert_eq!(b2.keycode, 10);
        k.bound(b2, t0);
        // Both spares in use: a third keysym waits until the older binding has aged.
        let later = t0 + Duration::from_millis(50);
        let Plan::Bind(b3) = k.plan(0x0100_4f60, later) else { panic!() };
        assert!(b3.wait > Duration::ZERO && b3.wait <= REBIND_AGE - Duration::from_millis(50), "{b3:?}");
        // The echo of our own change is recognised once.
        assert!(k.is_own_change(12, 1));
        assert!(!k.is_own_change(12, 1));
        assert_eq!(k.take_bindings(), vec![10, 12]);
    }

    #[test]
    fn rereading_the_map_keeps_live_bindings_out_of_the_index() {
        let mut k = map();
        let t0 = Instant::now();
        let Plan::Bind(b) = k.plan(0xe9, t0) else { panic!() };
        k.bound(b, t0);
        // The server now has é on keycode 12.
        k.update(8, 2, &[0x61, 0x41, SHIFT_L, 0, 0, 0, 0x31, 0x21, 0xe9, 0xe9]);
        assert_eq!(k.plan(0xe9, t0), Plan::Ready(Stroke { keycode: 12, shift: false }));
        assert_eq!(k.take_bindings(), vec![12]);
    }

    #[test]
    fn a_held_key_keeps_its_binding() {
        let mut k = map();
        let t0 = Instant::now();
        for keysym in [0xe9, 0xf6] {
            let Plan::Bind(b) = k.plan(keysym, t0) else { panic!() };
            k.bound(b, t0);
        }
        k.hold(12, true);
        let later = t0 + REBIND_AGE * 2;
        let Plan::Bind(b) = k.plan(0x0100_4f60, later) else { panic!() };
        assert_eq!(b.keycode, 10, "the held keycode 12 is not taken");
        k.hold(10, true);
        assert_eq!(k.plan(0x0100_4f61, later), Plan::NoSpare);
        k.hold(12, false);
        assert!(matches!(k.plan(0x0100_4f61, later), Plan::Bind(Binding { keycode: 12, .. })));
    }

    #[test]
    fn shift_is_trusted_only_on_character_keys() {
        let mut k = Keymap::default();
        // KP_Begin / KP_5 (NumLock selects KP_5), Print / Sys_Req (Alt selects Sys_Req), empty.
        k.update(8, 2, &[0xff9d, 0xffb5, 0xff61, 0xff15, 0, 0]);
        let now = Instant::now();
        assert!(matches!(k.plan(0xffb5, now), Plan::Bind(Binding { keycode: 10, .. })));
        assert!(matches!(k.plan(0xff15, now), Plan::Bind(Binding { keycode: 10, .. })));
        assert_eq!(k.plan(0xff9d, now), Plan::Ready(Stroke { keycode: 8, shift: false }));
    }

    #[test]
    fn a_map_with_no_spare_keycode_says_so() {
        let mut k = Keymap::default();
        k.update(8, 1, &[0x61]);
        assert_eq!(k.plan(0xe9, Instant::now()), Plan::NoSpare);
    }
}
