// Compares a loaded Bundle with a reference written by js/scripts/reference.py (the Python
// runtime): token ids, type ids and truncation per row, probabilities and labels. Shared by the
// Node tests and the browser page.

/** Returns {rows, idsEqual, maxAbsDiff, labelsAgree, truncatedEqual, problems} over every run. */
export async function compareWithReference(bundle, reference) {
  const summary = { rows: 0, idsEqual: 0, maxAbsDiff: 0, labelsAgree: 0, truncatedEqual: 0, problems: [] };
  const problem = (text) => summary.problems.length < 20 && summary.problems.push(text);
  for (const run of reference.runs) {
    const names = typeof run.tasks === "string" ? run.texts.map(() => run.tasks) : run.tasks;
    const result = await bundle.run(run.texts, run.tasks, { batchSize: run.batchSize });
    run.texts.forEach((text, i) => {
      summary.rows++;
      const where = `${run.name}, row ${i} (${JSON.stringify(text).slice(0, 60)})`;
      const { ids, typeIds } = bundle.tokenizer.encode(text, bundle.manifest.tasks[names[i]].max_length);
      if (ids.join() === run.ids[i].join() && typeIds.join() === run.typeIds[i].join()) summary.idsEqual++;
      else problem(`${where}: ids ${ids.join(" ")} != python ${run.ids[i].join(" ")}`);
      if (result.truncated[i] === run.truncated[i]) summary.truncatedEqual++;
      else problem(`${where}: truncated ${result.truncated[i]} != python ${run.truncated[i]}`);
      const expected = run.probabilities[i];
      const got = result.probabilities[i];
      if (got.length !== expected.length) problem(`${where}: ${got.length} probabilities, python ${expected.length}`);
      const diff = Math.max(...expected.map((p, c) => Math.abs(p - got[c])));
      summary.maxAbsDiff = Math.max(summary.maxAbsDiff, Number.isNaN(diff) ? Infinity : diff);
      const label = result.labels[i];
      if (label === run.labels[i]) summary.labelsAgree++;
      else problem(`${where}: label ${label} != python ${run.labels[i]} (${got} vs ${expected})`);
    });
  }
  return summary;
}
