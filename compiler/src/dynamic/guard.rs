//! Guards: predicates over controller decisions, kept in disjunctive normal
//! form so that equal guards compare equal and implication is a subset test.
//!
//! The algebra is exact. A guard only ever needs to over-approximate where a
//! value is needed (computing a value on more rows than necessary is
//! correct, just slower), so guard propagation calls [`Guard::widened`] to
//! cap its size; decision formulas, which are negated, are never widened.

use std::fmt;

/// Index of an [`super::Atom`] in [`super::Analysis::atoms`].
pub type AtomId = u32;

/// An atom or its negation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Literal {
    pub atom: AtomId,
    pub positive: bool,
}

/// A conjunction of literals, sorted by atom, at most one literal per atom.
pub type Term = Vec<Literal>;

/// A disjunction of terms; `[]` is false and `[[]]` is true.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Guard {
    terms: Vec<Term>,
}

/// Terms beyond which [`Guard::widened`] gives `true`.
pub const MAX_TERMS: usize = 32;

/// What the algebra needs to know about atoms: which literal pairs can never
/// hold together (the same atom with both polarities always conflicts;
/// `ArgMax == 0` and `ArgMax == 1` of the same index do too), and which sets
/// of positive literals cover every case (all the choices of one `ArgMax`).
pub trait AtomTable {
    /// Whether `a` and `b` (different atoms) exclude each other when both positive.
    fn exclusive(&self, a: AtomId, b: AtomId) -> bool;
    /// The atoms that, with `a`, exhaust every possibility (an `ArgMax`'s
    /// other choices), if `a` is part of such a group.
    fn siblings(&self, a: AtomId) -> Option<Vec<AtomId>>;
}

impl Guard {
    pub fn always() -> Guard {
        Guard { terms: vec![Vec::new()] }
    }

    pub fn never() -> Guard {
        Guard { terms: Vec::new() }
    }

    pub fn literal(atom: AtomId, positive: bool) -> Guard {
        Guard { terms: vec![vec![Literal { atom, positive }]] }
    }

    pub fn is_always(&self) -> bool {
        self.terms.iter().any(|t| t.is_empty())
    }

    pub fn is_never(&self) -> bool {
        self.terms.is_empty()
    }

    pub fn terms(&self) -> &[Term] {
        &self.terms
    }

    /// Atoms the guard mentions, sorted.
    pub fn atoms(&self) -> Vec<AtomId> {
        let mut atoms: Vec<AtomId> = self.terms.iter().flatten().map(|l| l.atom).collect();
        atoms.sort_unstable();
        atoms.dedup();
        atoms
    }

    pub fn or(&self, other: &Guard, table: &dyn AtomTable) -> Guard {
        let mut terms = self.terms.clone();
        terms.extend(other.terms.iter().cloned());
        Guard { terms }.simplified(table)
    }

    pub fn and(&self, other: &Guard, table: &dyn AtomTable) -> Guard {
        let mut terms = Vec::new();
        for a in &self.terms {
            for b in &other.terms {
                if let Some(t) = conjoin(a, b, table) {
                    terms.push(t);
                }
            }
        }
        Guard { terms }.simplified(table)
    }

    pub fn not(&self, table: &dyn AtomTable) -> Guard {
        // ¬(t1 ∨ t2 ∨ …) = ¬t1 ∧ ¬t2 ∧ …, each ¬t a disjunction of negated literals.
        let mut acc = Guard::always();
        for t in &self.terms {
            let negated = Guard { terms: t.iter().map(|l| vec![Literal { atom: l.atom, positive: !l.positive }]).collect() };
            acc = acc.and(&negated, table);
        }
        acc
    }

    /// `self`, or `true` when it has more than [`MAX_TERMS`] terms: sound
    /// for guards (see the module docs), never for a formula that is negated.
    pub fn widened(self) -> Guard {
        if self.terms.len() > MAX_TERMS {
            Guard::always()
        } else {
            self
        }
    }

    /// Whether `self` implies `other`: every term of `self` contains some term of `other`.
    pub fn implies(&self, other: &Guard) -> bool {
        self.terms.iter().all(|t| other.terms.iter().any(|o| o.iter().all(|l| t.contains(l))))
    }

    /// `self` with the literals `context` already guarantees removed, when
    /// the context is a single conjunction: what a nested block still has
    /// to test once its parent's guard holds.
    pub fn within(&self, context: &Guard, table: &dyn AtomTable) -> Guard {
        match context.terms.as_slice() {
            [known] => Guard { terms: self.terms.iter().map(|t| t.iter().filter(|l| !known.contains(l)).copied().collect()).collect() }
                .simplified(table),
            _ => self.clone(),
        }
    }

    /// Evaluates the guard with `value(atom)` giving each atom's truth.
    pub fn eval(&self, value: &mut dyn FnMut(AtomId) -> bool) -> bool {
        self.terms.iter().any(|t| t.iter().all(|l| value(l.atom) == l.positive))
    }

    /// Substitutes constants for atoms (`fixed(atom)` is `Some` for a known
    /// atom), e.g. when a decision folds at compile time.
    pub fn assign(&self, fixed: &dyn Fn(AtomId) -> Option<bool>, table: &dyn AtomTable) -> Guard {
        let mut terms = Vec::new();
        'terms: for t in &self.terms {
            let mut kept = Vec::new();
            for l in t {
                match fixed(l.atom) {
                    Some(v) if v == l.positive => {}
                    Some(_) => continue 'terms,
                    None => kept.push(*l),
                }
            }
            terms.push(kept);
        }
        Guard { terms }.simplified(table)
    }

    /// Canonical form: sorted terms, no term implied by another
    /// (absorption), complementary pairs merged (`x∧a ∨ x∧¬a = x`), a full
    /// group of `ArgMax` choices merged.
    fn simplified(mut self, table: &dyn AtomTable) -> Guard {
        loop {
            self.terms.sort();
            self.terms.dedup();
            let before = self.terms.clone();
            self.absorb();
            self.merge_complements();
            self.merge_choice_groups(table);
            if self.terms == before {
                break;
            }
        }
        self
    }

    fn absorb(&mut self) {
        let terms = std::mem::take(&mut self.terms);
        for (i, t) in terms.iter().enumerate() {
            let covered = terms.iter().enumerate().any(|(j, o)| {
                j != i && o.iter().all(|l| t.contains(l)) && (o.len() < t.len() || (o.len() == t.len() && j < i))
            });
            if !covered {
                self.terms.push(t.clone());
            }
        }
    }

    fn merge_complements(&mut self) {
        for i in 0..self.terms.len() {
            for j in i + 1..self.terms.len() {
                let (a, b) = (&self.terms[i], &self.terms[j]);
                if a.len() != b.len() {
                    continue;
                }
                let differing: Vec<usize> = (0..a.len()).filter(|&k| a[k] != b[k]).collect();
                if let [k] = differing[..] {
                    if a[k].atom == b[k].atom {
                        let mut merged = a.clone();
                        merged.remove(k);
                        self.terms.push(merged);
                        return;
                    }
                }
            }
        }
    }

    fn merge_choice_groups(&mut self, table: &dyn AtomTable) {
        for i in 0..self.terms.len() {
            for (k, lit) in self.terms[i].iter().enumerate() {
                if !lit.positive {
                    continue;
                }
                let Some(siblings) = table.siblings(lit.atom) else { continue };
                let mut rest = self.terms[i].clone();
                rest.remove(k);
                let all_present = siblings.iter().all(|&s| {
                    self.terms.iter().any(|t| {
                        t.len() == rest.len() + 1 && t.contains(&Literal { atom: s, positive: true }) && rest.iter().all(|l| t.contains(l))
                    })
                });
                if all_present {
                    self.terms.push(rest);
                    return;
                }
            }
        }
    }
}

/// `a ∧ b` as one term, or `None` when they contradict.
fn conjoin(a: &Term, b: &Term, table: &dyn AtomTable) -> Option<Term> {
    let mut out: Term = a.clone();
    for l in b {
        match out.iter().find(|x| x.atom == l.atom) {
            Some(x) if x.positive != l.positive => return None,
            Some(_) => {}
            None => out.push(*l),
        }
    }
    out.sort();
    let positives: Vec<AtomId> = out.iter().filter(|l| l.positive).map(|l| l.atom).collect();
    for (i, &x) in positives.iter().enumerate() {
        if positives[i + 1..].iter().any(|&y| table.exclusive(x, y)) {
            return None;
        }
    }
    Some(out)
}

/// Displays a guard with atom names supplied by the caller.
pub struct GuardDisplay<'a> {
    pub guard: &'a Guard,
    pub name: &'a dyn Fn(AtomId) -> String,
}

impl fmt::Display for GuardDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.guard.is_never() {
            return write!(f, "never");
        }
        if self.guard.is_always() {
            return write!(f, "always");
        }
        let several = self.guard.terms.len() > 1;
        for (i, t) in self.guard.terms.iter().enumerate() {
            if i > 0 {
                write!(f, " or ")?;
            }
            if several && t.len() > 1 {
                write!(f, "(")?;
            }
            for (j, l) in t.iter().enumerate() {
                if j > 0 {
                    write!(f, " and ")?;
                }
                if !l.positive {
                    write!(f, "not ")?;
                }
                write!(f, "{}", (self.name)(l.atom))?;
            }
            if several && t.len() > 1 {
                write!(f, ")")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Atoms 0..4 are independent tests; 4, 5, 6 are the three choices of one ArgMax.
    struct Table;
    impl AtomTable for Table {
        fn exclusive(&self, a: AtomId, b: AtomId) -> bool {
            a >= 4 && b >= 4 && a != b
        }
        fn siblings(&self, a: AtomId) -> Option<Vec<AtomId>> {
            (a >= 4).then(|| (4..7).filter(|&s| s != a).collect())
        }
    }

    fn lit(atom: AtomId, positive: bool) -> Guard {
        Guard::literal(atom, positive)
    }

    #[test]
    fn complements_and_choices_merge() {
        let t = &Table;
        assert!(lit(0, true).or(&lit(0, false), t).is_always());
        let x = lit(1, true);
        assert_eq!(x.and(&lit(0, true), t).or(&x.and(&lit(0, false), t), t), x);
        let all = lit(4, true).or(&lit(5, true), t).or(&lit(6, true), t);
        assert!(all.is_always());
        assert!(lit(4, true).and(&lit(5, true), t).is_never());
        assert!(lit(0, true).and(&lit(0, false), t).is_never());
    }

    #[test]
    fn nested_exits_imply_their_parents() {
        let t = &Table;
        let deep = lit(0, false).and(&lit(1, false), t);
        assert!(deep.implies(&lit(0, false)));
        assert!(!lit(0, false).implies(&deep));
        assert_eq!(deep.within(&lit(0, false), t), lit(1, false));
    }

    fn arb_guard() -> impl Strategy<Value = Guard> {
        let leaf = (0u32..7, any::<bool>()).prop_map(|(a, p)| lit(a, p));
        leaf.prop_recursive(4, 24, 2, |inner| {
            prop_oneof![
                (inner.clone(), inner.clone()).prop_map(|(a, b)| a.and(&b, &Table)),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| a.or(&b, &Table)),
                inner.prop_map(|a| a.not(&Table)),
            ]
        })
    }

    /// Every assignment consistent with the table (exactly one choice true).
    fn assignments() -> Vec<[bool; 7]> {
        let mut out = Vec::new();
        for bits in 0..16u32 {
            for choice in 4..7 {
                let mut a = [false; 7];
                for (i, slot) in a.iter_mut().enumerate().take(4) {
                    *slot = bits & (1 << i) != 0;
                }
                a[choice] = true;
                out.push(a);
            }
        }
        out
    }

    proptest! {
        /// The algebra agrees with truth tables: and/or/not/implies hold on
        /// every consistent assignment.
        #[test]
        fn algebra_matches_truth_tables(a in arb_guard(), b in arb_guard()) {
            let t = &Table;
            for env in assignments() {
                let ev = |g: &Guard| g.eval(&mut |x| env[x as usize]);
                prop_assert_eq!(ev(&a.and(&b, t)), ev(&a) && ev(&b));
                prop_assert_eq!(ev(&a.or(&b, t)), ev(&a) || ev(&b));
                prop_assert_eq!(ev(&a.not(t)), !ev(&a));
                if a.implies(&b) {
                    prop_assert!(!ev(&a) || ev(&b));
                }
            }
        }
    }
}
