/**
 * Coalescing to the end of the event-loop turn: the returned function asks for `fn` to run once,
 * with setImmediate, however often it is called before then. What happens in one turn (several
 * jobs ending, several requests arriving) is then handled together, without a timer's delay.
 */
export function atEndOfTurn(fn: () => void): () => void {
  let scheduled = false;
  const run = () => {
    scheduled = false;
    fn();
  };
  return () => {
    if (scheduled) return;
    scheduled = true;
    setImmediate(run);
  };
}
