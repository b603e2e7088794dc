import { Model } from 'objection';

export class GeneratedImage extends Model {
  static override tableName = 'generated_images';
  declare id: string;
  declare generation_id: string;
  declare index: number;
  declare storage_key: string;
  declare thumbnail_key: string;
  declare url: string;
  declare thumbnail_url: string;
  declare width: number;
  declare height: number;
  declare blurhash: string;
  declare seed: number | null;
  declare sha256: string;
  declare bytes: number;
  declare created_at: Date;
}
