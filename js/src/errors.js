/** A bundle that cannot be used: damaged, tampered with, or not what the runtime reads. The
 * message names the file (or the manifest field) and what was expected. */
export class BundleError extends Error {
  constructor(message) {
    super(message);
    this.name = "BundleError";
  }
}
