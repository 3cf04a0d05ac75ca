// The emotion model's TF.js calls, shared by the page (emotion-detector.js) and each Web Worker
// (classifier-worker.js): a classic script, so that the worker can importScripts it. Needs window.tf / self.tf.
//
//   const {model, inputSize} = await emotionModel.load(urlOrIOHandler);   // [H, W]; warmed up
//   const probs = await emotionModel.run(model, rgbaBytes, n, height, width);   // Float32Array [n * C]
/* global tf */
globalThis.emotionModel = {
  /** A TF.js graph model from a URL or a tf.io handler, run once on zeros so the first face is not slow. */
  async load(source) {
    const model = await tf.loadGraphModel(source);
    const [, height, width] = model.inputs[0].shape;
    tf.tidy(() => model.execute(tf.zeros([1, height, width, 3])).dataSync());
    return {model, inputSize: [height, width]};
  },

  /** RGBA bytes of n faces stacked vertically (as getImageData gives them) -> probabilities [n * C]. */
  async run(model, pixels, n, height, width) {
    const output = tf.tidy(() => model.execute(tf.reshape(
      tf.cast(tf.browser.fromPixels(new ImageData(pixels, width, height * n)), 'float32'), [n, height, width, 3])));
    const probs = await output.data();
    output.dispose();
    return probs;
  },
};
