// Undo and redo over whole values (the editor's graph: definition + positions).
//
// commit(next, {key}) records a step; consecutive commits with the same key (typing
// in one field, one drag of a node) make one step. commit(next, {record: false})
// replaces the present without a step (loading).
import { useCallback, useState } from "react";

const LIMIT = 200;

export function useHistory(initial) {
  const [state, setState] = useState({ past: [], present: initial, future: [], key: null });

  const commit = useCallback((update, options) => {
    const settings = options || {};
    setState((current) => {
      const next = typeof update === "function" ? update(current.present) : update;
      if (next === current.present) return current;
      if (settings.record === false) return { past: [], present: next, future: [], key: null };
      if (settings.key && settings.key === current.key) {
        return { past: current.past, present: next, future: [], key: current.key };
      }
      return {
        past: current.past.concat([current.present]).slice(-LIMIT),
        present: next, future: [], key: settings.key || null,
      };
    });
  }, []);

  const undo = useCallback(() => setState((current) => {
    if (!current.past.length) return current;
    return {
      past: current.past.slice(0, -1), present: current.past[current.past.length - 1],
      future: [current.present].concat(current.future), key: null,
    };
  }), []);

  const redo = useCallback(() => setState((current) => {
    if (!current.future.length) return current;
    return {
      past: current.past.concat([current.present]), present: current.future[0],
      future: current.future.slice(1), key: null,
    };
  }), []);

  // A commit after this one starts a new step even with the same key.
  const seal = useCallback(() => setState((current) => (current.key ? Object.assign({}, current, { key: null }) : current)), []);

  return {
    present: state.present, commit: commit, undo: undo, redo: redo, seal: seal,
    canUndo: state.past.length > 0, canRedo: state.future.length > 0,
  };
}
