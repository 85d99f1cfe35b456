export type { EncodeOptions } from './codec.js'
export { decode, encode, isCompressed } from './codec.js'
