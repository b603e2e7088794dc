export { User } from './User';
export { ApiToken } from './ApiToken';
export { Generation } from './Generation';
export { GeneratedImage } from './GeneratedImage';
