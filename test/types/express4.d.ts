// `express4` is an npm alias of express 4 used for the smoke test; it ships no types of its own.
declare module 'express4' {
  import type { Express, RequestHandler as Handler } from 'express'

  function express4(): Express
  namespace express4 {
    type RequestHandler = Handler
  }
  export default express4
}
