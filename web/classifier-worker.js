// One copy of the emotion model in a Web Worker (emotion-detector.js keeps a pool of them). TF.js 4.22's
// WASM backend runs one XNNPACK thread whatever setThreadsCount says (tensorflow/tfjs#8513), so the page
// uses the other cores by classifying consecutive frames in separate workers, each single-threaded.
//
// Messages in:  {type: 'init', artifacts, backend, wasmPath}     -> {type: 'ready', inputShape, backend}
//   artifacts: the graph model as tf.io loaded it on the page (model.json + weights, fetched once there).
//               {type: 'classify', id, pixels, n, height, width} -> {type: 'result', id, probs}
//   pixels: RGBA bytes of n faces stacked vertically (n * height * width * 4), as getImageData gives them.
/* global tf, emotionModel */
importScripts('vendor/tf-core.min.js', 'vendor/tf-converter.min.js', 'vendor/tf-backend-cpu.min.js',
  'vendor/tf-backend-wasm.min.js', 'emotion-model.js');

let model = null;

async function init({artifacts, backend, wasmPath}) {
  tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', false);  // the pool is the parallelism: no idle pthreads
  tf.wasm.setWasmPaths(wasmPath);
  if (!(await tf.setBackend(backend))) throw new Error(`backend ${backend} did not start in a worker`);
  await tf.ready();
  const loaded = await emotionModel.load(tf.io.fromMemory(artifacts));
  model = loaded.model;
  return {type: 'ready', inputShape: loaded.inputSize, backend: tf.getBackend()};
}

self.onmessage = async ({data}) => {
  try {
    if (data.type === 'init') {
      self.postMessage(await init(data));
    } else if (data.type === 'classify') {
      const probs = await emotionModel.run(model, data.pixels, data.n, data.height, data.width);
      self.postMessage({type: 'result', id: data.id, probs}, [probs.buffer]);
    }
  } catch (err) {
    self.postMessage({type: 'error', id: data.id, message: String(err && err.message || err)});
  }
};
