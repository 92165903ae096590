// A Nickel text area with line numbers, where validation errors are shown at their line.
import { useRef } from "preact/hooks";
import type { BlueprintError } from "../types";

export function BlueprintEditor(props: {
  id: string;
  value: string;
  onInput: (value: string) => void;
  errors: BlueprintError[];
}) {
  const area = useRef<HTMLTextAreaElement>(null);
  const gutter = useRef<HTMLDivElement>(null);
  const lines = Math.max(1, props.value.split("\n").length);
  const wrong = new Set(props.errors.map((e) => e.line).filter((l): l is number => typeof l === "number"));
  const goTo = (line: number, column?: number | null) => {
    const text = area.current;
    if (!text) return;
    const starts = text.value.split("\n");
    let offset = 0;
    for (let i = 0; i < line - 1 && i < starts.length; i++) offset += starts[i].length + 1;
    offset += Math.max(0, (column ?? 1) - 1);
    text.focus();
    text.setSelectionRange(offset, offset);
  };
  return (
    <div class="editor">
      <div class="editor-body">
        <div class="gutter" ref={gutter} aria-hidden="true">
          {Array.from({ length: lines }, (_, i) => (
            <div key={i} class={wrong.has(i + 1) ? "line-error" : undefined}>
              {i + 1}
            </div>
          ))}
        </div>
        <textarea
          id={props.id}
          ref={area}
          value={props.value}
          spellcheck={false}
          rows={16}
          aria-invalid={props.errors.length > 0}
          aria-describedby={props.errors.length ? `${props.id}-errors` : undefined}
          onInput={(e) => props.onInput(e.currentTarget.value)}
          onScroll={(e) => {
            if (gutter.current) gutter.current.scrollTop = e.currentTarget.scrollTop;
          }}
        />
      </div>
      {props.errors.length ? (
        <ul id={`${props.id}-errors`} class="editor-errors" role="alert">
          {props.errors.map((e, i) => (
            <li key={i}>
              {e.line ? (
                <button type="button" class="link" onClick={() => goTo(e.line ?? 1, e.column)}>
                  line {e.line}
                  {e.column ? `, column ${e.column}` : ""}
                </button>
              ) : null}{" "}
              <span class="message">{e.message}</span>
            </li>
          ))}
        </ul>
      ) : null}
    </div>
  );
}
